"""Refusals of headless objects that do not fit together, in one line naming the input, the checkpoint
and what was found, before anything runs:

* a conditioning from another family's CLIP given to a sampler or guider node (the SDXL base's prompt
  to the refiner's model, an SD1.x prompt to SDXL, ...): its embedding width, or its pooled output, is
  not the model's;
* a CLIP in a base-only slot: `CLIPTextEncodeSDXL` takes the SDXL base's CLIP (CLIP-L and OpenCLIP
  bigG); the refiner's has bigG only (`CLIPTextEncodeSDXLRefiner` is its encoder).

A VAE that does not belong with its UNet is refused when the checkpoint loads
(`sld_core.models.family_loading.check_vae`). A LATENT carries no family (as in ComfyUI), so a VAE of
the same channel count from another checkpoint (SD1.x's VAE on SDXL latents) cannot be told apart here.
"""
from .errors import NodeInputError

# The embedding width of each full-size family's CLIP, to say where a conditioning probably came from.
CLIP_WIDTHS = {768: "an SD1.x CLIP", 1024: "an SD2.x CLIP", 2048: "an SDXL base CLIP", 1280: "an SDXL refiner CLIP"}
ENCODERS = {"SD1.x": "CLIP-L only", "SD2.x": "OpenCLIP ViT-H only", "SDXL refiner": "OpenCLIP bigG only"}
SIZE_NUMBERS = {"sdxl": 6, "refiner": 5}  # size/crop/score numbers in SDXL's added embedding


def described(obj, what="model"):
    """'NAME' (FAMILY) of a loaded object, or "this model" for one built in code."""
    if getattr(obj, "checkpoint", None) is None:
        return f"this {what}"
    return f"{obj.checkpoint!r} ({obj.family})"


def _source(width):
    guess = CLIP_WIDTHS.get(width)
    return f" ({guess}'s)" if guess else ""


def check_conditionings(model, **conditionings):
    """Refuse a conditioning `model` (an sld_core Model) cannot take: `NodeInputError` naming the input."""
    config = model.unet.config
    width = config.cross_attention_dim
    kind = model.added_conditioning
    pooled_width = None
    if kind in SIZE_NUMBERS:
        pooled_width = config.projection_class_embeddings_input_dim - SIZE_NUMBERS[kind] * config.addition_time_embed_dim
    for name, conditioning in conditionings.items():
        for tensor, extra in conditioning or ():
            found = tensor.shape[-1]
            if isinstance(width, int) and found != width:
                raise NodeInputError(name, f"text embeddings {found} wide{_source(found)} cannot condition "
                                           f"{described(model)}, which takes {width}{_source(width)}: encode the "
                                           "text with that checkpoint's CLIP")
            pooled = extra.get("pooled_output")
            if pooled_width is not None and (pooled is None or pooled.shape[-1] != pooled_width):
                got = "no pooled output" if pooled is None else f"a pooled output {pooled.shape[-1]} wide"
                raise NodeInputError(name, f"{described(model)} needs each conditioning's pooled output "
                                           f"({pooled_width} wide); this one has {got}: encode the text with that "
                                           "checkpoint's CLIP")


def require_sdxl_base_clip(clip, node_name):
    """`clip` must be an SDXL base's CLIP (CLIP-L and OpenCLIP bigG)."""
    if hasattr(clip, "encode_sdxl"):
        return
    family = getattr(clip, "family", None)
    found = (f"{described(clip, 'CLIP')} has {ENCODERS.get(family, 'another text encoder')}" if family
             else f"got a {type(clip).__name__}")
    hint = ": use CLIPTextEncodeSDXLRefiner" if family == "SDXL refiner" else ""
    raise NodeInputError("clip", f"{node_name} needs the CLIP of an SDXL base checkpoint (CLIP-L and OpenCLIP "
                                 f"bigG); {found}{hint}")
