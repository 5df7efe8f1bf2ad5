"""What `checkpoint.load_checkpoint` needs to know per family, before and after building modules.

* `single_file_parts`: an original single file's tensors → its family, diffusers-layout parts, their
  configs (inferred from shapes) and its model sampling (prediction type decided as ComfyUI does).
* `diffusers_folder_parts`: the same for a diffusers folder (configs and scheduler read from it).
* `text_encoder_factory` and `make_clip`: the text encoders' module classes and the headless ``CLIP``
  object the family gets (`clip.Clip`, `sdxl_clip.SDXLClip`, `sdxl_clip.RefinerClip`).

Tensors pass through untouched (the key maps keep them as views), so the caller's zero-copy build
applies to every family alike. Unsupported families are refused here by name, before anything is built.
"""
from ..errors import CheckpointError
from ..model_sampling import DiscreteSchedule
from .config_inference import infer_configs
from .families import (
    FAMILIES, diffusers_sampling, identify_diffusers_folder, identify_single_file, refuse_unsupported,
    single_file_sampling, text_encoder_is_open_clip,
)
from .keymaps import (
    REFINER_G_PREFIX, SD2_TEXT_PREFIX, SDXL_G_PREFIX, SDXL_L_PREFIX, UNET_PREFIX, VAE_PREFIX, ldm_to_diffusers,
)

# What a single file of each family must hold: (prefixes, any of which will do; what it is).
REQUIRED = {
    "SD1.x": ((("cond_stage_model.transformer.",), "text encoder"),),
    "SD2.x": (((SD2_TEXT_PREFIX, REFINER_G_PREFIX), "OpenCLIP ViT-H text encoder"),),
    "SDXL": (((SDXL_L_PREFIX,), "CLIP-L text encoder"), ((SDXL_G_PREFIX,), "OpenCLIP bigG text encoder")),
    "SDXL refiner": (((REFINER_G_PREFIX,), "OpenCLIP bigG text encoder"),),
}
# Top-level markers some files carry besides weights (ComfyUI's v-prediction flags).
MARKERS = ("v_pred", "ztsnr")


def single_file_parts(path, state):
    """(family, parts, configs, schedule) of an original single file's ``state`` (key → tensor)."""
    family = identify_single_file(state.keys(), lambda k: state[k].shape)
    refuse_unsupported(path, family)
    needs = (((UNET_PREFIX,), "UNet"), ((VAE_PREFIX,), "VAE")) + REQUIRED[family]
    for prefixes, what in needs:
        if not any(k.startswith(prefixes) for k in state):
            raise CheckpointError(path, f"not an {family} checkpoint: it has no {what} weights ({prefixes[0]}*)")
    try:
        prediction, zsnr = single_file_sampling(family, state.keys(), state.__getitem__)
        parts = ldm_to_diffusers({k: v for k, v in state.items() if k not in MARKERS}, family)
        configs = infer_configs(parts, family, prediction)
        check_vae(path, family, configs)
    except KeyError as missing:
        raise CheckpointError(path, f"not a complete {family} checkpoint: weight {missing} is missing") from None
    except ValueError as err:
        raise CheckpointError(path, f"not an {family} checkpoint: {err}") from None
    return family, parts, configs, DiscreteSchedule(prediction_type=prediction, zsnr=zsnr)


def diffusers_folder_parts(path, read_json, read_weights):
    """(family, parts, configs, schedule) of a diffusers folder; ``read_json(root, file)`` and
    ``read_weights(root, folder)`` are the loader's readers."""
    index = read_json(path, path / "model_index.json") if (path / "model_index.json").is_file() else None
    present = tuple(p.name for p in path.iterdir() if p.is_dir())
    unet_file = path / "unet" / "config.json"
    unet_config = read_json(path, unet_file) if unet_file.is_file() else None
    if unet_config is None and index is None:
        raise CheckpointError(path, "not a diffusers SD1.x/SD2.x/SDXL folder: unet/config.json is missing")
    family = identify_diffusers_folder(unet_config, index, present)
    refuse_unsupported(path, family)
    names = ("unet", "vae") + tuple(spec.part for spec in FAMILIES[family].text_encoders)
    for part in names:
        if not (path / part / "config.json").is_file():
            raise CheckpointError(path, f"not a diffusers {family} folder: {part}/config.json is missing")
    configs = {part: read_json(path, path / part / "config.json") for part in names}
    if family == "SD1.x" and text_encoder_is_open_clip(configs["text_encoder"]):
        family = "SD2.x"  # a reduced SD2: its UNet's context width is not 1024, its text encoder is OpenCLIP
    check_vae(path, family, configs)
    parts = {part: read_weights(path, path / part) for part in names}
    scheduler = path / "scheduler" / "scheduler_config.json"
    config = read_json(path, scheduler) if scheduler.is_file() else {}
    prediction, zsnr = diffusers_sampling(config)
    try:
        schedule = DiscreteSchedule(
            beta_start=config.get("beta_start", 0.00085), beta_end=config.get("beta_end", 0.012),
            num_timesteps=config.get("num_train_timesteps", 1000),
            beta_schedule=config.get("beta_schedule", "scaled_linear"), prediction_type=prediction, zsnr=zsnr,
        )
    except ValueError as err:
        raise CheckpointError(path, f"scheduler/scheduler_config.json: {err}") from None
    return family, parts, configs, schedule


def check_vae(path, family, configs):
    """Refuse a VAE that does not belong with the UNet, naming what was found: a latent of another
    channel count (the 16-channel SD3/Flux VAE in an SD file), or a latent scale other than the
    family's (an SD1.x/SD2.x VAE, 0.18215, in an SDXL folder, 0.13025: colours come out wrong)."""
    channels = configs["vae"].get("latent_channels", 4)
    unet_in = configs["unet"].get("in_channels", 4)
    if unet_in not in (channels, 2 * channels + 1):  # 2c + 1: an inpainting UNet (latent, masked latent, mask)
        raise CheckpointError(path, f"mismatched VAE: it has {channels} latent channels, the {family} UNet takes "
                                    f"{unet_in}{' (16 is the SD3/Flux VAE)' if channels == 16 else ''}")
    scale, expected = configs["vae"].get("scaling_factor", 0.18215), FAMILIES[family].latent_scale
    if abs(scale - expected) > 1e-6:
        raise CheckpointError(path, f"mismatched VAE: its scaling_factor is {scale}, {family}'s latents use "
                                    f"{expected}{' (0.18215 is the SD1.x/SD2.x VAE)' if scale == 0.18215 else ''}")


def text_encoder_factory(config, projected):
    """A builder of the text encoder: ``CLIPTextModelWithProjection`` when the weights have a
    ``text_projection`` (OpenCLIP towers), else ``CLIPTextModel``."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig.from_dict({k: v for k, v in config.items() if not k.startswith("_")})
    cls = CLIPTextModelWithProjection if projected else CLIPTextModel
    return lambda: cls(config)


def make_clip(family, encoders, tokenizer, diffusers_folder=False):
    """The headless ``CLIP`` of ``family`` over its built text encoders (by part name)."""
    from .clip import Clip
    from .sdxl_clip import RefinerClip, SDXLClip

    if family == "SDXL":
        return SDXLClip(tokenizer, encoders["text_encoder"], encoders["text_encoder_2"])
    if family == "SDXL refiner":
        return RefinerClip(tokenizer, encoders["text_encoder_2"])
    [spec] = FAMILIES[family].text_encoders
    # diffusers' SD2 exports drop ViT-H's last layer: their last layer is ComfyUI's penultimate
    dropped = diffusers_folder and family == "SD2.x"
    return Clip.for_spec(tokenizer, encoders[spec.part], spec, last_layer_dropped=dropped)
