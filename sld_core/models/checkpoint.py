"""`load_checkpoint`: an SD1.x, SD2.x, SDXL or SDXL-refiner checkpoint → (`Model`, `Clip`, `Vae`), offline.

Three inputs: an original single-file ``.safetensors`` (what ComfyUI users keep in
``models/checkpoints``), a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``), and ``.ckpt``/``.pt``
files, which are read only through ``torch.load(weights_only=True)`` so that a pickle can never run
code. Single files carry no config: the family is recognised from the tensors (`families`; others
are refused by name) and the configs are inferred from tensor shapes (`config_inference`); what differs
per family is data (`family_loading`), not a second code path. The tokenizer is always the one shipped
in the package; nothing is downloaded.

Modules are built on the meta device and take the checkpoint's tensors as their parameters
(``load_state_dict(assign=True)``). A ``.safetensors`` tensor that already has the dtype and device the
model runs in is used straight from a memory map of the file (`tensor_files`); the others are
converted one at a time, straight from the file's dtype, with no float32 detour and no second copy.
"""
import json
from pathlib import Path

import torch

from ..acceleration import ExecutionOptions
from ..device import default_dtype, resolve_device, vae_dtype
from ..errors import CheckpointError
from .clip import load_clip_tokenizer
from .family_loading import diffusers_folder_parts, make_clip, single_file_parts, text_encoder_factory
from .families import FAMILIES
from .model import Model
from .tensor_files import materialize, read_safetensors, read_weights_only_pickle
from .vae import Vae

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")
VAE_FILE_PREFIX = "first_stage_model."  # a VAE cut out of a checkpoint sometimes keeps it


def load_checkpoint(path, device="auto", dtype=None, compile=False):
    """Load an SD1.x/SD2.x/SDXL checkpoint file or diffusers folder as ``(Model, Clip, Vae)``.

    ``device``: "auto", "cpu", "cuda" or "mps". ``dtype``: the UNet's and text encoder's dtype; default
    float16 on CUDA, float32 elsewhere. The VAE runs in bfloat16/float32 where that is float16
    (see `device.vae_dtype`). The UNet runs with the device's measured execution defaults
    (`acceleration.ExecutionOptions.for_device`), compiled with torch.compile if ``compile``.
    The ``Clip`` is an `sdxl_clip.SDXLClip` / `sdxl_clip.RefinerClip` for SDXL checkpoints.
    Raises `CheckpointError` (`UnsupportedModelError` for SD3, Flux and other families, by name).
    """
    path = Path(path)
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    if path.is_dir():
        family, parts, configs, schedule = diffusers_folder_parts(path, _read_json, _read_weights)
    elif path.is_file():
        family, parts, configs, schedule = _read_single_file(path)
    else:
        raise CheckpointError(path, "no such checkpoint file or folder")

    unet = _build(path, "UNet", _unet_factory(configs["unet"]), parts.pop("unet"), device, dtype)
    vae = _build(path, "VAE", _vae_factory(configs["vae"]), parts.pop("vae"), device, vae_dtype(device, dtype))
    encoders = {}
    for spec in FAMILIES[family].text_encoders:
        state = parts.pop(spec.part)
        factory = text_encoder_factory(configs[spec.part], "text_projection.weight" in state)
        encoders[spec.part] = _build(path, spec.part.replace("_", " "), factory, state, device, dtype)
    model = Model(unet, schedule, latent_scale=vae.config.scaling_factor,
                  added_conditioning=FAMILIES[family].added_conditioning)
    model.set_execution(ExecutionOptions.for_device(device, compile=compile))
    loaded = model, make_clip(family, encoders, load_clip_tokenizer(), path.is_dir()), Vae(vae)
    for part in loaded:  # named in errors about mixing checkpoints (nodes/compatibility.py)
        part.checkpoint, part.family = path.name, family
    return loaded


# --- single files -----------------------------------------------------------------------------------

def _read_single_file(path):
    return single_file_parts(path, read_tensors(path))


def read_tensors(path):
    """A weights file's tensors by key: .safetensors memory-mapped, .ckpt/.pt only weights-only."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return read_weights_only_pickle(path)
    raise CheckpointError(path, f"unknown checkpoint format {suffix!r}; expected .safetensors, .ckpt or .pt")


# --- standalone VAE files -----------------------------------------------------------------------------

def load_vae(path, device="auto", dtype=None):
    """A standalone VAE file (ComfyUI's ``models/vae``) as a `Vae`: original layout (the keys a checkpoint
    holds under ``first_stage_model.``, as in vae-ft-mse-840000-ema-pruned) or diffusers' layout. SD1.x,
    SD2.x and SDXL VAEs have one architecture (only their latent scale differs, and that belongs to the
    model), so any of them decodes any 4-channel latent, as in ComfyUI; another latent width (SD3/Flux's
    16 channels) is refused. ``dtype`` as `load_checkpoint` (the VAE runs in `device.vae_dtype` of it)."""
    from .config_inference import infer_vae_config
    from .keymaps import ldm_vae_to_diffusers

    path = Path(path)
    device = resolve_device(device)
    dtype = vae_dtype(device, dtype or default_dtype(device))
    state = {k.removeprefix(VAE_FILE_PREFIX): v for k, v in read_tensors(path).items()
             if not k.startswith(("loss.", "model_ema."))}
    conv_in = state.get("decoder.conv_in.weight")
    if conv_in is None or conv_in.ndim != 4:
        raise CheckpointError(path, "is not a VAE: it has no decoder.conv_in weight (a checkpoint belongs in "
                                    "models/checkpoints, a LoRA in models/loras)")
    if conv_in.shape[1] != 4:
        raise CheckpointError(path, f"mismatched VAE: it has {conv_in.shape[1]} latent channels, SD1.x/SD2.x/SDXL "
                                    f"UNets take 4{' (16 is the SD3/Flux VAE)' if conv_in.shape[1] == 16 else ''}")
    try:
        if any(k.startswith("encoder.down.") for k in state):  # the original layout
            state = ldm_vae_to_diffusers(state)
        config = infer_vae_config(state)
    except KeyError as missing:
        raise CheckpointError(path, f"not a complete VAE: weight {missing} is missing") from None
    except ValueError as err:
        raise CheckpointError(path, f"not a Stable Diffusion VAE: {err}") from None
    vae = Vae(_build(path, "VAE", _vae_factory(config), state, device, dtype))
    vae.checkpoint = path.name
    return vae


# --- diffusers folders ------------------------------------------------------------------------------

def _read_json(root, file):
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(root, f"cannot read {file.relative_to(root)}: {err}") from None


def _read_weights(root, folder):
    """A component's weights: a single or sharded .safetensors file, else a weights-only .bin."""
    for name in _WEIGHT_NAMES:
        for variant in ("", ".fp16"):
            file = folder / f"{name}{variant}.safetensors"
            if file.is_file():
                return read_safetensors(file)
            index = folder / f"{name}{variant}.safetensors.index.json"
            if index.is_file():
                shards = sorted(set(_read_json(root, index)["weight_map"].values()))
                return {k: v for shard in shards for k, v in read_safetensors(folder / shard).items()}
    for name in _WEIGHT_NAMES:
        file = folder / ("pytorch_model.bin" if name == "model" else f"{name}.bin")
        if file.is_file():
            return read_weights_only_pickle(file)
    raise CheckpointError(root, f"no weights found in {folder.name}/ (expected a .safetensors or .bin file)")


# --- building modules -------------------------------------------------------------------------------

def _unet_factory(config):
    from diffusers import UNet2DConditionModel

    return lambda: UNet2DConditionModel.from_config(config)


def _vae_factory(config):
    from diffusers import AutoencoderKL

    return lambda: AutoencoderKL.from_config(config)


def _build(path, component, factory, state, device, dtype):
    """Construct a module on the meta device and give it ``state``'s tensors (moved/cast one by one)."""
    try:
        with torch.device("meta"):
            module = factory()
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, f"its {component} config is not usable: {err}") from None
    expected = module.state_dict()
    if component.startswith("text encoder"):
        if not any(k.startswith("text_model.") for k in expected):  # CLIPTextModel: transformers 5 names
            state = {k.removeprefix("text_model."): v for k, v in state.items()}
        state.pop("embeddings.position_ids", None)
        state.pop("text_model.embeddings.position_ids", None)
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys
        )
        raise CheckpointError(path, f"its {component} weights do not fit the {component} their shapes imply ({detail})")
    # Tensor by tensor: a mapped tensor that is already right becomes the weight itself (zero-copy);
    # one that is converted then gives its source pages back, so the peak stays about one model.
    params = {key: materialize(state.pop(key), device, dtype) for key in list(state)}
    module.load_state_dict(params, strict=True, assign=True)
    _fill_meta_buffers(module, device)
    return module.eval().requires_grad_(False)


def _fill_meta_buffers(module, device):
    """Non-persistent buffers are not in a state dict, so after a meta-device build they are still
    empty; the only one SD1.x modules have is CLIP's ``position_ids`` (0..n−1)."""
    for name, buffer in list(module.named_buffers()):
        if not buffer.is_meta:
            continue
        if not name.endswith("position_ids"):
            raise RuntimeError(f"buffer {name} was not loaded")  # a bug here, not a user error
        owner = module.get_submodule(name.rpartition(".")[0])
        owner.register_buffer(
            "position_ids", torch.arange(buffer.shape[-1], device=device).expand(buffer.shape), persistent=False
        )
