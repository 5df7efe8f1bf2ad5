"""Model families as data, and which family a checkpoint is, read off its tensor names and shapes.

A family says which configs its components start from (``configs/``), which text encoders it has
and how ComfyUI runs them, its latent scale, and how its prediction type is decided. Loading code
asks `identify_single_file` / `identify_diffusers_folder` for the family name and refuses what
`is_supported` rejects (`refuse_unsupported`), before anything is built.

Single files are told apart as ComfyUI tells them apart (``comfy/model_detection.py``):

* SDXL base: CLIP-L at ``conditioner.embedders.0.transformer.`` and OpenCLIP bigG at
  ``conditioner.embedders.1.model.``, a ``label_emb`` (the added text_time conditioning);
* SDXL refiner: bigG alone at ``conditioner.embedders.0.model.``, with a ``label_emb``;
* SD2.x: OpenCLIP ViT-H at ``cond_stage_model.model.`` (or ``conditioner.embedders.0.model.`` with no
  ``label_emb``, SD2 saved in the sgm layout), or 1024-wide cross-attention; SD2 unCLIP has a
  ``label_emb`` too and is refused;
* SD1.x: everything else with an LDM UNet (``input_blocks``).

Other architectures (SD3/SD3.5 MMDiT, Flux, ...) are recognised by their own block names and refused
by name. What no rule recognises is left to the SD1.x loader, whose key map refuses unknown weights.
"""
from dataclasses import dataclass

from ..errors import UnsupportedModelError

UNET = "model.diffusion_model."
SDXL_L = "conditioner.embedders.0.transformer."
SDXL_G = "conditioner.embedders.1.model."
REFINER_G = "conditioner.embedders.0.model."
SD2_H = "cond_stage_model.model."
SD2_CONTEXT_DIM = 1024


@dataclass(frozen=True)
class TextEncoderSpec:
    """One text encoder of a family and how ComfyUI runs it (``comfy/sd1_clip.py`` and friends).

    ``layer``: which hidden state is the prompt embedding, counted from the end as ComfyUI's
    ``layer_idx`` (-1 the last layer, -2 the penultimate). ``final_norm``: whether the final layer
    norm is applied to that hidden state. ``pad``: the token that fills a chunk after its end token
    (OpenCLIP encoders pad with 0, OpenAI's CLIP-L with the end token). ``projected_pooled``: the
    pooled output goes through ``text_projection`` (OpenCLIP encoders carry one).
    """

    part: str  # diffusers folder / component name
    config: str  # shipped config the shapes are inferred on top of
    layer: int
    final_norm: bool
    pad: str  # "end" or "zero"
    projected_pooled: bool


CLIP_L_SD1 = TextEncoderSpec("text_encoder", "sd15_text_encoder", -1, True, "end", False)
CLIP_H_SD2 = TextEncoderSpec("text_encoder", "sd2_text_encoder", -2, True, "zero", True)
CLIP_L_SDXL = TextEncoderSpec("text_encoder", "sd15_text_encoder", -2, False, "end", False)
CLIP_G_SDXL = TextEncoderSpec("text_encoder_2", "sdxl_text_encoder_2", -2, False, "zero", True)


@dataclass(frozen=True)
class Family:
    name: str
    unet: str
    vae: str
    text_encoders: tuple
    latent_scale: float
    unet_heads: str  # "8" (SD1: 8 heads everywhere) or "64-wide" (SD2/SDXL: num_head_channels 64)
    added_conditioning: str = ""  # "", "sdxl" (size, crop, target size) or "refiner" (size, crop, aesthetic score)


FAMILIES = {
    f.name: f for f in (
        Family("SD1.x", "sd15_unet", "sd15_vae", (CLIP_L_SD1,), 0.18215, "8"),
        Family("SD2.x", "sd2_unet", "sd15_vae", (CLIP_H_SD2,), 0.18215, "64-wide"),
        Family("SDXL", "sdxl_unet", "sdxl_vae", (CLIP_L_SDXL, CLIP_G_SDXL), 0.13025, "64-wide", "sdxl"),
        Family("SDXL refiner", "sdxl_refiner_unet", "sdxl_vae", (CLIP_G_SDXL,), 0.13025, "64-wide", "refiner"),
    )
}

# Recognised, never loaded: name → the key fragments (any prefix) that identify it, all required.
UNSUPPORTED = (
    ("HunyuanVideo", ("double_blocks.0.img_attn.", "txt_in.individual_token_refiner.")),
    ("Flux", ("double_blocks.0.img_attn.", "img_in.")),
    ("SD3.5", ("joint_blocks.0.", "x_block_self_attn")),
    ("SD3", ("joint_blocks.0.", "x_embedder.")),
    ("AuraFlow", ("cond_seq_linear.",)),
    ("Stable Cascade", ("clip_txt_mapper.",)),
    ("PixArt", ("t_block.1.", "y_embedder.")),
    ("HunyuanDiT", ("mlp_t5.",)),
    ("Stable Video Diffusion", ("time_stack.",)),
)
UNRECOGNISED = "unrecognised diffusion model"
# Published SD3.5 Large has 38 joint blocks (SD3 Medium 24), and no x_block_self_attn.
SD35_LARGE_DEPTH = 38


def is_supported(name):
    return name in FAMILIES


def refuse_unsupported(path, name):
    """`UnsupportedModelError` naming the family, unless ``name`` is a family we load."""
    if name == UNRECOGNISED:
        raise UnsupportedModelError(path, name, "its diffusion model is not a Stable Diffusion UNet (no input_blocks) "
                                    "and not a family we recognise; SD1.x, SD2.x and SDXL are supported")
    if not is_supported(name):
        raise UnsupportedModelError(path, name)


def identify_single_file(keys, shape_of=None):
    """The family name of an original single-file checkpoint from its keys (``shape_of(key)`` gives a
    tensor's shape, for rules that need one). Unsupported families get their own name."""
    keys = list(keys)
    for name, fragments in UNSUPPORTED:
        if all(any(f in k for k in keys) for f in fragments):
            if name == "SD3" and _count_blocks(keys, "joint_blocks.") >= SD35_LARGE_DEPTH:
                return "SD3.5"
            return name
    if "edm_mean" in keys and "edm_std" in keys:
        return "Playground v2.5 (EDM)"
    if any(k.startswith("edm_vpred.") for k in keys):
        return "EDM v-prediction SDXL"
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    label_emb = has(UNET + "label_emb.")
    if has(SDXL_G) or has(SDXL_L):
        return "SDXL"
    if has(REFINER_G):
        return "SDXL refiner" if label_emb else "SD2.x"
    if has(SD2_H):
        return "SD2.1 unCLIP" if label_emb else "SD2.x"
    if label_emb:
        return _sdxl_kind_from_unet(keys, shape_of)
    context = _context_dim(keys, shape_of)
    if context == SD2_CONTEXT_DIM:
        return "SD2.x"
    if context == 2048:
        return "SDXL"
    if context == 1280:
        return "SDXL refiner"
    if keys and not has(UNET + "input_blocks.") and has(UNET):
        return UNRECOGNISED
    return "SD1.x"


def identify_diffusers_folder(unet_config, model_index=None, parts=()):
    """The family of a diffusers folder from its UNet config, its ``model_index.json`` (may be None) and
    the names of its component folders."""
    pipeline = (model_index or {}).get("_class_name", "")
    for fragment, name in (("Flux", "Flux"), ("StableDiffusion3", "SD3/SD3.5"), ("PixArt", "PixArt"),
                           ("AuraFlow", "AuraFlow"), ("StableCascade", "Stable Cascade"), ("Kolors", "Kolors")):
        if fragment in pipeline:
            return name
    if unet_config is None:
        return f"{pipeline or 'diffusers'} (no unet/)"
    if unet_config.get("addition_embed_type") == "text_time":
        refiner = (model_index or {}).get("requires_aesthetics_score") or (
            "text_encoder_2" in parts and "text_encoder" not in parts)
        return "SDXL refiner" if refiner else "SDXL"
    if unet_config.get("class_embed_type") or unet_config.get("addition_embed_type"):
        return "SD2.1 unCLIP" if unet_config.get("cross_attention_dim") == SD2_CONTEXT_DIM else "an unknown UNet model"
    if unet_config.get("cross_attention_dim") == SD2_CONTEXT_DIM:
        return "SD2.x"
    return "SD1.x"


def text_encoder_is_open_clip(text_config):
    """OpenCLIP text towers use GELU, OpenAI's CLIP-L quick-GELU: tells a reduced SD2 from a reduced SD1."""
    return text_config.get("hidden_act") == "gelu"


def _sdxl_kind_from_unet(keys, shape_of):
    """Base or refiner from a UNet without text encoders: the refiner's added conditioning is the pooled
    bigG output (as wide as its context) plus five 256-wide embeddings, the base's six."""
    if shape_of is None:
        return "SDXL"
    adm = shape_of(UNET + "label_emb.0.0.weight")[1]
    context = _context_dim(keys, shape_of)
    return "SDXL refiner" if context is not None and adm - context == 5 * 256 else "SDXL"


def _context_dim(keys, shape_of):
    if shape_of is None:
        return None
    to_k = next((k for k in keys if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), None)
    return None if to_k is None else shape_of(to_k)[1]


def _count_blocks(keys, marker):
    blocks = set()
    for k in keys:
        if marker in k:
            rest = k.split(marker, 1)[1]
            blocks.add(rest.split(".", 1)[0])
    return len(blocks)


# --- prediction type -------------------------------------------------------------------------------

V_STD_THRESHOLD = 0.09


def single_file_sampling(name, keys, tensor_of):
    """(prediction_type, zsnr) of a single file, decided as ComfyUI decides it (``supported_models.py``):

    * SD2.x: v-prediction when the UNet has 4 input channels and the population standard deviation
      of the first transformer block's ``norm1.bias`` in the last output block is above 0.09 (for a
      full-size UNet that is ComfyUI's ``output_blocks.11.1.transformer_blocks.0.norm1.bias``), else
      epsilon. SD2 inpainting (9 channels) is always epsilon.
    * SDXL (base and refiner): v-prediction when the file has a ``v_pred`` key (what ComfyUI writes when
      it saves a v model), with zero-terminal-SNR when it also has ``ztsnr``; else epsilon.
    * SD1.x: always epsilon.

    ``tensor_of(key)`` returns a tensor (read only for the SD2 rule). A workflow overrides the result
    with the ModelSamplingDiscrete node.
    """
    import torch

    keys = set(keys)
    if name == "SD2.x":
        if tensor_of(UNET + "input_blocks.0.0.weight").shape[1] != 4:
            return "epsilon", False
        key = _last_output_norm1_bias(keys)
        if key is not None and torch.std(tensor_of(key).float(), unbiased=False) > V_STD_THRESHOLD:
            return "v_prediction", False
        return "epsilon", False
    if name in ("SDXL", "SDXL refiner") and "v_pred" in keys:
        return "v_prediction", "ztsnr" in keys
    return "epsilon", False


def _last_output_norm1_bias(keys):
    best = None
    for k in keys:
        if k.startswith(UNET + "output_blocks.") and k.endswith(".1.transformer_blocks.0.norm1.bias"):
            index = int(k[len(UNET + "output_blocks."):].split(".", 1)[0])
            best = max(best or (index, k), (index, k))
    return None if best is None else best[1]


def diffusers_sampling(scheduler_config):
    """(prediction_type, zsnr) from a diffusers ``scheduler_config.json`` (None: epsilon, as diffusers)."""
    config = scheduler_config or {}
    return config.get("prediction_type", "epsilon"), bool(config.get("rescale_betas_zero_snr", False))
