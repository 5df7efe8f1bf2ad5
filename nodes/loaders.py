"""Checkpoint loaders: `SLDCheckpointLoader` (also offers the embedded demo model) and, for headless
mode, ComfyUI's `CheckpointLoaderSimple` with the same inputs and outputs.

Inside ComfyUI, `SLDCheckpointLoader` returns ComfyUI's own MODEL/CLIP/VAE objects (`comfy_loader`),
so every node the editor lets a user connect to it can use them; headless, it returns sld_core's.
"""
import logging

from ..sld_core.errors import CheckpointError
from .context import current_runtime, headless_active, in_comfyui
from .errors import NodeInputError

# The embedded default model's name. A file of this name under models/checkpoints wins; otherwise the
# trained demo model shipped in the package (sld_core/demo_assets/) is loaded.
DEMO_CHECKPOINT = "sld_demo.safetensors"

log = logging.getLogger(__name__)

CKPT_TOOLTIP = "The name of the checkpoint (model) to load."
OUTPUT_TOOLTIPS = (
    "The model used for denoising latents.",
    "The CLIP model used for encoding text prompts.",
    "The VAE model used for encoding and decoding images to and from latent space.",
)


def comfyui_hosts():
    """True when ComfyUI runs the nodes (not the headless runner, even inside a ComfyUI process)."""
    return in_comfyui() and not headless_active()


def checkpoint_names():
    """Checkpoint names offered in the COMBO: the demo model first, then the files found."""
    if comfyui_hosts():
        from .comfy_loader import checkpoint_names as comfyui_names

        names = comfyui_names()
    else:
        names = current_runtime().models.names("checkpoints")
    return names if DEMO_CHECKPOINT in names else [DEMO_CHECKPOINT] + names


def checkpoint_path(name):
    return current_runtime().models.path("checkpoints", name)


def load_comfyui_checkpoint(ckpt_name):
    """ComfyUI's (MODEL, CLIP, VAE) for a name in ComfyUI's checkpoints folders, or the demo model."""
    from . import comfy_loader

    path = comfy_loader.checkpoint_path(ckpt_name)
    if ckpt_name == DEMO_CHECKPOINT:
        # A file of the demo's name is a (re)trained demo model: reduced widths that ComfyUI's family
        # detection does not recognise, so it is assembled like the embedded one.
        if path is None:
            from ..sld_core.demo import DEMO_CHECKPOINT_FILE

            log.info("%s: no file of that name in ComfyUI's checkpoints folders; using the embedded demo model "
                     "(64x64 shape scenes; its unsafe concept is magenta)", DEMO_CHECKPOINT)
            path = str(DEMO_CHECKPOINT_FILE)
        return comfy_loader.load_reduced_sd1(path)
    if path is None:  # ComfyUI's own validation refuses names not in the list before this runs
        raise NodeInputError("ckpt_name", f"no checkpoint named {ckpt_name!r} in ComfyUI's checkpoints folders")
    return comfy_loader.load_checkpoint(path)


def load_named_checkpoint(ckpt_name):
    """(Model, Clip, Vae) for a listed checkpoint name; the demo name falls back to the packaged demo model."""
    from ..sld_core.device import precision_dtype, resolve_device

    runtime = current_runtime()
    device = resolve_device(runtime.device)
    options = dict(device=device, dtype=precision_dtype(runtime.precision, device), compile=runtime.compile)
    path = checkpoint_path(ckpt_name)
    if path is None and ckpt_name == DEMO_CHECKPOINT:
        from ..sld_core.demo import load_demo

        log.info("%s: no file of that name in the checkpoints folders; using the embedded demo model "
                 "(64x64 shape scenes; its unsafe concept is magenta)", DEMO_CHECKPOINT)
        return load_demo(**options)
    if path is None:
        raise NodeInputError("ckpt_name", f"no checkpoint named {ckpt_name!r} in {runtime.models.where('checkpoints')}")
    from ..sld_core.models.checkpoint import load_checkpoint

    try:
        return tuple(load_checkpoint(path, **options))
    except CheckpointError as error:
        raise NodeInputError("ckpt_name", f"cannot load {ckpt_name!r}: {error.reason}") from error


class CheckpointLoaderSimple:
    """ComfyUI's core checkpoint loader (headless only; inside ComfyUI its own is used)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (checkpoint_names(), {"tooltip": CKPT_TOOLTIP})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = OUTPUT_TOOLTIPS
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."

    def load_checkpoint(self, ckpt_name):
        return load_named_checkpoint(ckpt_name)


class SLDCheckpointLoader:
    """Loads an SD1.x checkpoint for the SLD nodes; offers the embedded demo model too."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (checkpoint_names(), {
                    "default": DEMO_CHECKPOINT,
                    "tooltip": f"The SD1.x checkpoint to load. {DEMO_CHECKPOINT} is the embedded demo model "
                               "(works with no model files; a file of that name in the checkpoints folder wins): "
                               "64x64 scenes of circles, squares and triangles, trained with magenta as its "
                               "'unsafe' concept (safety concept 'magenta, gore, gory, bloody').",
                }),
            }
        }

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = OUTPUT_TOOLTIPS
    FUNCTION = "load_checkpoint"
    CATEGORY = "SLD/loaders"
    DESCRIPTION = (
        "Loads a checkpoint, or the embedded demo model. Inside ComfyUI it loads through ComfyUI itself "
        "(as Load Checkpoint does) and its outputs are ComfyUI's own MODEL, CLIP and VAE, so they work with "
        "every node that takes them (KSampler, CLIP Text Encode, LoRA loaders, VAE Decode/Encode, ...) as "
        "well as with the SLD nodes; the demo model too. In the headless runner (`sld run`) it loads SD1.x "
        "single-file .safetensors, weights-only .ckpt or diffusers folders with sld_core."
    )

    def load_checkpoint(self, ckpt_name):
        if comfyui_hosts():
            return load_comfyui_checkpoint(ckpt_name)
        return load_named_checkpoint(ckpt_name)


def vae_names():
    return current_runtime().models.names("vae")


class VAELoader:
    """ComfyUI's core VAE loader (headless only): a VAE file from models/vae (original or diffusers layout).
    ComfyUI's extra choices (taesd*, pixel_space) are not offered."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (vae_names(),)}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a VAE file (e.g. vae-ft-mse-840000-ema-pruned.safetensors) to use instead of a checkpoint's."

    def load_vae(self, vae_name):
        from ..sld_core.device import precision_dtype, resolve_device
        from ..sld_core.models.checkpoint import load_vae

        runtime = current_runtime()
        path = runtime.models.path("vae", vae_name)
        if path is None:
            raise NodeInputError("vae_name", f"no VAE named {vae_name!r} in {runtime.models.where('vae')}")
        device = resolve_device(runtime.device)
        try:
            return (load_vae(path, device, precision_dtype(runtime.precision, device)),)
        except CheckpointError as error:
            raise NodeInputError("vae_name", f"cannot load {vae_name!r}: {error.reason}") from error
