"""ComfyUI's model-patching core nodes for headless mode: `LoraLoader`, `LoraLoaderModelOnly` and
`CLIPSetLastLayer`, with ComfyUI's inputs. Inside ComfyUI its own are used.

The merge and the key formats are `sld_core.models.lora`; clip skip is `Clip.with_last_layer`. Each node
returns new MODEL/CLIP objects and leaves its inputs as they were: the executor caches the loader's.
"""
import logging

from ..sld_core.errors import CheckpointError, InvalidInputError
from .compatibility import described
from .context import current_runtime
from .errors import NodeInputError

log = logging.getLogger(__name__)

STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}


def lora_names():
    return current_runtime().models.names("loras")


def read_lora(lora_name):
    """The tensors of a listed LoRA file; `NodeInputError` on ``lora_name`` if it is missing or unreadable."""
    from ..sld_core.models.checkpoint import read_tensors

    models = current_runtime().models
    path = models.path("loras", lora_name)
    if path is None:
        raise NodeInputError("lora_name", f"no LoRA named {lora_name!r} in {models.where('loras')}")
    try:
        return path, read_tensors(path)
    except CheckpointError as error:
        raise NodeInputError("lora_name", f"cannot load {lora_name!r}: {error.reason}") from error


def load_lora(model, clip, lora_name, strength_model, strength_clip):
    """(model, clip) with the LoRA merged; ComfyUI's LoraLoader.load_lora, which reads nothing when both
    strengths are 0. Refused with one line: a file with no layer of the model, or with a layer of another
    shape (a LoRA of another family). Keys naming no layer of the model are logged as one warning."""
    from ..sld_core.models.lora import apply_lora

    if strength_model == 0 and strength_clip == 0:
        return model, clip
    path, state = read_lora(lora_name)
    try:
        model, clip, match = apply_lora(state, model, clip, strength_model, strength_clip, path)
    except CheckpointError as error:
        raise NodeInputError("lora_name", f"{lora_name!r} cannot be applied to {described(model)}: "
                                          f"it {error.reason}") from error
    if match.not_loaded:
        shown = ", ".join(match.not_loaded[:3]) + (" ..." if len(match.not_loaded) > 3 else "")
        log.warning("LoRA %s: %d of its %d keys name no layer of %s and were not loaded (%s); %d UNet and %d "
                    "text-encoder weights were patched", lora_name, len(match.not_loaded), len(state),
                    "this model" if clip is None else "this model or CLIP", shown, len(match.unet), len(match.text))
    return model, clip


class LoraLoader:
    """ComfyUI's core LoRA loader (headless only; inside ComfyUI its own is used)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
                "lora_name": (lora_names(), {"tooltip": "The name of the LoRA."}),
                "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to modify the diffusion model. "
                                                                    "This value can be negative."}),
                "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to modify the CLIP model. "
                                                                   "This value can be negative."}),
            }
        }

    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The modified diffusion model.", "The modified CLIP model.")
    FUNCTION = "load_lora"
    CATEGORY = "loaders"
    DESCRIPTION = ("LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are "
                   "denoised such as applying styles. Multiple LoRA nodes can be linked together.")

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip):
        return load_lora(model, clip, lora_name, strength_model, strength_clip)


class LoraLoaderModelOnly:
    """ComfyUI's LoraLoaderModelOnly: the LoRA's UNet layers only (headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "lora_name": (lora_names(),),
                "strength_model": ("FLOAT", dict(STRENGTH)),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"
    CATEGORY = "loaders"
    DESCRIPTION = "Applies a LoRA's diffusion-model layers only (its text-encoder layers are left out)."

    def load_lora_model_only(self, model, lora_name, strength_model):
        return (load_lora(model, None, lora_name, strength_model, 0)[0],)


class CLIPSetLastLayer:
    """ComfyUI's CLIPSetLastLayer ("clip skip"; headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP",),
                "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1}),
            }
        }

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"
    CATEGORY = "conditioning"
    DESCRIPTION = ("Encodes text from an earlier layer of the CLIP text encoder: -1 is the last layer, -2 the "
                   "one before it (\"clip skip 2\").")

    def set_last_layer(self, clip, stop_at_clip_layer):
        try:
            return (clip.with_last_layer(stop_at_clip_layer),)
        except InvalidInputError as error:
            raise NodeInputError("stop_at_clip_layer", str(error)) from error
