"""Component configs of a checkpoint, read off its tensor shapes (single files carry no config).

Every inferable field (widths, depths, which blocks attend, transformer depth per level, context
width, added-conditioning width, vocabulary, projection) comes from the shapes; the rest comes from
the family's official configs shipped in ``configs/`` (`families.FAMILIES` names them). So a
full-size checkpoint gets exactly its family's published configs, and a reduced-size one gets the
family's hyper-parameters with its own widths and depths. Fields no shape reveals follow fixed rules:

* UNet attention heads: SD1.x has 8 in every attention block (diffusers ``attention_head_dim=8``,
  which for ``UNet2DConditionModel`` means 8 heads; ComfyUI assumes ``num_heads=8``), so block widths
  must be divisible by 8. SD2.x and SDXL use 64-wide heads (ComfyUI's ``num_head_channels=64``):
  ``width // 64`` heads per level, one head for a level narrower than 64.
* SDXL's size embeddings are 256 wide (``addition_time_embed_dim``; ComfyUI's ``Timestep(256)``).
* SD2.x 512-base and 768-v have the same shapes; the prediction type picks the published
  ``sample_size``/``upcast_attention`` of one or the other.
* Text-encoder attention heads: 64-wide heads (CLIP's rule: 12 heads at 768, 16 for ViT-H, 20 for
  bigG), i.e. ``hidden // 64``; a text encoder narrower than 64 gets a single head.
* Group-norm groups 32, norm eps 1e-5, the family's activation and special-token ids.
"""
import json
import re
from functools import lru_cache
from pathlib import Path

from .families import FAMILIES, identify_diffusers_folder, identify_single_file
from .keymaps import unet_layout_from_diffusers, vae_shape_from_diffusers

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
UNET_HEADS = 8
HEAD_DIM = 64  # SD2.x/SDXL UNet heads and every CLIP text encoder's heads are 64 wide
TEXT_HEAD_DIM = HEAD_DIM
SD2_BASE = dict(sample_size=64, upcast_attention=False)  # stable-diffusion-2-1-base, the ε model


@lru_cache(maxsize=None)
def _standard(stem):
    config = json.loads((CONFIG_DIR / f"{stem}.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def shipped_config(stem):
    """A shipped config (``configs/<stem>.json``, e.g. "sdxl_unet") without its ``_`` keys, as a fresh dict."""
    return json.loads(json.dumps(_standard(stem)))


def sd15_config(name):
    """The shipped SD1.5 config of component ``name`` ("unet", "vae" or "text_encoder"), as a fresh dict."""
    return shipped_config(f"sd15_{name}")


def detect_family(keys, shape_of=None):
    """The family of an original single file's keys, None for SD1.x (what the SD1.x loader takes);
    `families.identify_single_file` has the rules. ``shape_of(key)`` gives a tensor's shape."""
    family = identify_single_file(keys, shape_of)
    return None if family == "SD1.x" else family


def detect_family_from_unet_config(config):
    """The same test for a diffusers folder, from its UNet config (None for SD1.x)."""
    family = identify_diffusers_folder(config)
    return None if family == "SD1.x" else family


def _count(keys, pattern):
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def infer_unet_config(sd, family="SD1.x", prediction_type="epsilon"):
    """UNet2DConditionModel config for a diffusers-layout UNet state dict of ``family``."""
    keys = list(sd)
    layout = unet_layout_from_diffusers(keys)
    widths = [sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(layout.num_blocks)]
    config = shipped_config(FAMILIES[family].unet)
    if FAMILIES[family].unet_heads == "8":
        for width, attends in zip(widths, layout.down_attention):
            if attends and width % UNET_HEADS:
                raise ValueError(f"attention block width {width} is not divisible by SD1's {UNET_HEADS} heads")
        heads = UNET_HEADS
    else:
        heads = [_heads(width, "UNet level") for width in widths]
    attn2 = next(k for k in keys if k.endswith("attn2.to_k.weight"))
    config.update(
        in_channels=sd["conv_in.weight"].shape[1],
        out_channels=sd["conv_out.weight"].shape[0],
        block_out_channels=widths,
        layers_per_block=layout.layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in layout.down_attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in layout.up_attention],
        cross_attention_dim=sd[attn2].shape[1],
        attention_head_dim=heads,
    )
    if sd["mid_block.attentions.0.proj_in.weight"].ndim == 2:
        config["use_linear_projection"] = True
    _set_transformer_depth(config, keys, layout)
    time_dim = sd["time_embedding.linear_1.weight"].shape[0]
    if time_dim != 4 * widths[0]:
        config["time_embedding_dim"] = time_dim
    if "add_embedding.linear_1.weight" in sd:
        config["projection_class_embeddings_input_dim"] = sd["add_embedding.linear_1.weight"].shape[1]
    elif config.get("addition_embed_type"):
        raise ValueError(f"an {family} UNet needs its added-conditioning weights (add_embedding / label_emb)")
    if family == "SD2.x" and prediction_type == "epsilon":
        config.update(SD2_BASE)
    return config


def _set_transformer_depth(config, keys, layout):
    """Transformer blocks per attention, per level (published lists give 1 where a level does not
    attend). diffusers' mid block takes the last entry, so the file's mid block must match it."""
    depths = [
        _count(keys, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") if attends else None
        for i, attends in enumerate(layout.down_attention)
    ]
    mid = _count(keys, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    attending = {d for d in depths if d is not None} | {mid}
    published = config.get("transformer_layers_per_block", 1)
    if len(attending) == 1 and not isinstance(published, list):
        depth = attending.pop()
        if depth != 1 or "transformer_layers_per_block" in config:
            config["transformer_layers_per_block"] = depth
        return
    depths = [1 if d is None else d for d in depths]
    if mid != depths[-1]:
        raise ValueError(f"mid-block transformer depth {mid} differs from the deepest level's {depths[-1]}")
    config["transformer_layers_per_block"] = depths


def _heads(width, what):
    if width < HEAD_DIM:
        return 1
    if width % HEAD_DIM:
        raise ValueError(f"{what} width {width} is not a multiple of the {HEAD_DIM}-wide attention heads")
    return width // HEAD_DIM


def infer_vae_config(sd, family="SD1.x"):
    """AutoencoderKL config for a diffusers-layout VAE state dict of ``family``."""
    n_blocks, per = vae_shape_from_diffusers(list(sd))
    config = shipped_config(FAMILIES[family].vae)
    config.update(
        in_channels=sd["encoder.conv_in.weight"].shape[1],
        out_channels=sd["decoder.conv_out.weight"].shape[0],
        latent_channels=sd["post_quant_conv.weight"].shape[0],
        block_out_channels=[sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(n_blocks)],
        layers_per_block=per,
        down_block_types=["DownEncoderBlock2D"] * n_blocks,
        up_block_types=["UpDecoderBlock2D"] * n_blocks,
    )
    return config


def infer_text_config(sd, base="sd15_text_encoder"):
    """CLIPTextConfig fields for a transformers-layout CLIP text encoder state dict (with or without
    ``text_model.``), on top of the shipped config ``base``. A ``text_projection.weight`` gives
    ``projection_dim`` (OpenCLIP towers, run as ``CLIPTextModelWithProjection``)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    vocab, hidden = sd["embeddings.token_embedding.weight"].shape
    config = shipped_config(base)
    config.update(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=sd["embeddings.position_embedding.weight"].shape[0],
        num_hidden_layers=_count(sd, r"encoder\.layers\.(\d+)\."),
        intermediate_size=sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_attention_heads=text_heads(hidden),
        projection_dim=sd["text_projection.weight"].shape[0] if "text_projection.weight" in sd else hidden,
    )
    return config


def text_heads(hidden):
    """Attention heads of a CLIP text encoder of width ``hidden`` (64-wide heads; one if narrower)."""
    if hidden < TEXT_HEAD_DIM:
        return 1
    if hidden % TEXT_HEAD_DIM:
        raise ValueError(f"text-encoder width {hidden} is not a multiple of CLIP's {TEXT_HEAD_DIM}-wide heads")
    return hidden // TEXT_HEAD_DIM


def infer_configs(parts, family, prediction_type="epsilon"):
    """Configs of every part of a diffusers-layout split (`keymaps.ldm_to_diffusers`) of ``family``:
    {"unet", "vae", and the family's text encoders by part name}."""
    configs = {
        "unet": infer_unet_config(parts["unet"], family, prediction_type),
        "vae": infer_vae_config(parts["vae"], family),
    }
    for spec in FAMILIES[family].text_encoders:
        configs[spec.part] = infer_text_config(parts[spec.part], spec.config)
    return configs
