"""`load_checkpoint`: an SD1.x checkpoint → (`Model`, `Clip`, `Vae`), offline.

Three inputs: an original single-file ``.safetensors`` (what ComfyUI users keep in
``models/checkpoints``), a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``), and ``.ckpt``/``.pt``
files, which are read only through ``torch.load(weights_only=True)`` so that a pickle can never run
code. Single files carry no config: the configs are inferred from tensor shapes
(`config_inference`). The tokenizer is always the one shipped in the package; nothing is downloaded.

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
from ..errors import CheckpointError, UnsupportedModelError
from ..model_sampling import DiscreteSchedule
from .clip import Clip, load_clip_tokenizer
from .config_inference import (
    detect_family, detect_family_from_unet_config, infer_text_config, infer_unet_config, infer_vae_config,
)
from .keymaps import UNET_PREFIX, VAE_PREFIX, ldm_to_diffusers
from .model import Model
from .tensor_files import materialize, read_safetensors, read_weights_only_pickle
from .vae import Vae

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
DIFFUSERS_PARTS = ("unet", "vae", "text_encoder")
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def load_checkpoint(path, device="auto", dtype=None, compile=False):
    """Load an SD1.x checkpoint file or diffusers folder as ``(Model, Clip, Vae)``.

    ``device``: "auto", "cpu", "cuda" or "mps". ``dtype``: the UNet's and text encoder's dtype; default
    float16 on CUDA, float32 elsewhere. The VAE runs in bfloat16/float32 where that is float16
    (see `device.vae_dtype`). The UNet runs with the device's measured execution defaults
    (`acceleration.ExecutionOptions.for_device`), compiled with torch.compile if ``compile``.
    Raises `CheckpointError` (`UnsupportedModelError` for SD2.x/SDXL).
    """
    path = Path(path)
    device = resolve_device(device)
    dtype = dtype or default_dtype(device)
    if path.is_dir():
        parts, configs, schedule = _read_diffusers_folder(path)
    elif path.is_file():
        parts, configs, schedule = _read_single_file(path)
    else:
        raise CheckpointError(path, "no such checkpoint file or folder")

    unet = _build(path, "UNet", _unet_factory(configs["unet"]), parts.pop("unet"), device, dtype)
    vae = _build(path, "VAE", _vae_factory(configs["vae"]), parts.pop("vae"), device, vae_dtype(device, dtype))
    text_encoder = _build(
        path, "text encoder", _text_factory(configs["text_encoder"]), parts.pop("text_encoder"), device, dtype
    )
    model = Model(unet, schedule, latent_scale=vae.config.scaling_factor)
    model.set_execution(ExecutionOptions.for_device(device, compile=compile))
    return model, Clip(load_clip_tokenizer(), text_encoder), Vae(vae)


# --- single files -----------------------------------------------------------------------------------

def _read_single_file(path):
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state = read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        state = read_weights_only_pickle(path)
    else:
        raise CheckpointError(path, f"unknown checkpoint format {suffix!r}; expected .safetensors, .ckpt or .pt")
    _check_family(path, state.keys(), lambda k: state[k].shape)
    for prefix, what in ((UNET_PREFIX, "UNet"), (VAE_PREFIX, "VAE"), ("cond_stage_model.transformer.", "text encoder")):
        if not any(k.startswith(prefix) for k in state):
            raise CheckpointError(path, f"not an SD1.x checkpoint: it has no {what} weights ({prefix}*)")
    try:
        parts = ldm_to_diffusers({k: v for k, v in state.items() if not k.startswith(VAE_PREFIX + "loss.")})
        configs = {
            "unet": infer_unet_config(parts["unet"]),
            "vae": infer_vae_config(parts["vae"]),
            "text_encoder": infer_text_config(parts["text_encoder"]),
        }
    except KeyError as missing:
        raise CheckpointError(path, f"not a complete SD1.x checkpoint: weight {missing} is missing") from None
    except ValueError as err:
        raise CheckpointError(path, f"not an SD1.x checkpoint: {err}") from None
    return parts, configs, DiscreteSchedule()


def _check_family(path, keys, shape_of):
    family = detect_family(list(keys), shape_of)
    if family:
        raise UnsupportedModelError(path, family)


# --- diffusers folders ------------------------------------------------------------------------------

def _read_diffusers_folder(path):
    for part in DIFFUSERS_PARTS:
        if not (path / part / "config.json").is_file():
            raise CheckpointError(path, f"not a diffusers SD1.x folder: {part}/config.json is missing")
    configs = {part: _read_json(path, path / part / "config.json") for part in DIFFUSERS_PARTS}
    family = detect_family_from_unet_config(configs["unet"])
    if family or (path / "text_encoder_2").is_dir():
        raise UnsupportedModelError(path, family or "SDXL")
    parts = {part: _read_weights(path, path / part) for part in DIFFUSERS_PARTS}
    return parts, configs, _schedule(path)


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


def _schedule(path):
    file = path / "scheduler" / "scheduler_config.json"
    if not file.is_file():
        return DiscreteSchedule()
    config = _read_json(path, file)
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise CheckpointError(path, f"{config['prediction_type']} models are not supported yet (only epsilon)")
    return DiscreteSchedule(
        beta_start=config.get("beta_start", 0.00085), beta_end=config.get("beta_end", 0.012),
        num_timesteps=config.get("num_train_timesteps", 1000),
        beta_schedule=config.get("beta_schedule", "scaled_linear"),
    )


# --- building modules -------------------------------------------------------------------------------

def _unet_factory(config):
    from diffusers import UNet2DConditionModel

    return lambda: UNet2DConditionModel.from_config(config)


def _vae_factory(config):
    from diffusers import AutoencoderKL

    return lambda: AutoencoderKL.from_config(config)


def _text_factory(config):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return lambda: CLIPTextModel(CLIPTextConfig.from_dict(config))


def _build(path, component, factory, state, device, dtype):
    """Construct a module on the meta device and give it ``state``'s tensors (moved/cast one by one)."""
    try:
        with torch.device("meta"):
            module = factory()
    except (TypeError, ValueError) as err:
        raise CheckpointError(path, f"its {component} config is not usable: {err}") from None
    expected = module.state_dict()
    state = {k.removeprefix("text_model."): v for k, v in state.items()} if component == "text encoder" else state
    state.pop("embeddings.position_ids", None)
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys
        )
        raise CheckpointError(path, f"its {component} weights do not fit an SD1.x {component} ({detail})")
    # Tensor by tensor: a mapped tensor that is already right becomes the weight itself (zero-copy);
    # one that is converted gives its source pages back first, so the peak stays about one model.
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
