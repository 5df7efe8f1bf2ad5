"""Component configs of an SD1.x checkpoint, read off its tensor shapes (single files carry no config).

Every inferable field (widths, depths, which blocks attend, context width, vocabulary) comes from the
shapes; the rest comes from the SD1.5 configs shipped in ``configs/``. So a full-size SD1.x checkpoint
gets exactly the SD1.5 configs, and a reduced-size one gets SD1.5's hyper-parameters with its own
widths and depths. Fields no shape reveals follow fixed rules:

* UNet attention heads: 8 in every attention block (diffusers ``attention_head_dim=8``, which for
  ``UNet2DConditionModel`` means 8 heads; ComfyUI assumes ``num_heads=8`` for SD1.x too). Block widths
  must therefore be divisible by 8.
* Text-encoder attention heads: 64-wide heads (CLIP's rule: 12 heads at 768), i.e. ``hidden // 64``;
  a text encoder narrower than 64 gets a single head.
* Group-norm groups 32, norm eps 1e-5, quick-GELU, SD1's special-token ids.

Also tells SD1.x from the families we do not load yet (SD2.x, SDXL).
"""
import json
import re
from functools import lru_cache
from pathlib import Path

from .keymaps import UNET_PREFIX, unet_layout_from_diffusers, vae_shape_from_diffusers

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
UNET_HEADS = 8
TEXT_HEAD_DIM = 64
SD2_CONTEXT_DIM = 1024


@lru_cache(maxsize=None)
def _standard(name):
    config = json.loads((CONFIG_DIR / f"sd15_{name}.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def sd15_config(name):
    """The shipped SD1.5 config of component ``name`` ("unet", "vae" or "text_encoder"), as a fresh dict."""
    return json.loads(json.dumps(_standard(name)))


def detect_family(keys, shape_of=None):
    """"SDXL", "SD2.x" or None (SD1.x) for the keys of an original single-file checkpoint.

    SDXL has ``conditioner.embedders`` and a ``label_emb``; SD2.x has an OpenCLIP text encoder
    (``cond_stage_model.model.``) and 1024-wide cross-attention. ``shape_of(key)`` gives a tensor's
    shape, for the context-width test.
    """
    if any(k.startswith(("conditioner.embedders.", UNET_PREFIX + "label_emb.")) for k in keys):
        return "SDXL"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "SD2.x"
    if shape_of is not None:
        to_k = next((k for k in keys if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None)
        if to_k is not None:
            context = shape_of(to_k)[1]
            if context == SD2_CONTEXT_DIM:
                return "SD2.x"
            if context == 2048:
                return "SDXL"
    return None


def detect_family_from_unet_config(config):
    """The same test for a diffusers folder, from its UNet config."""
    if config.get("addition_embed_type") == "text_time" or config.get("cross_attention_dim") == 2048:
        return "SDXL"
    if config.get("cross_attention_dim") == SD2_CONTEXT_DIM:
        return "SD2.x"
    return None


def _count(keys, pattern):
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def infer_unet_config(sd):
    """UNet2DConditionModel config for a diffusers-layout SD1.x UNet state dict."""
    keys = list(sd)
    layout = unet_layout_from_diffusers(keys)
    widths = [sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in range(layout.num_blocks)]
    for width, attends in zip(widths, layout.down_attention):
        if attends and width % UNET_HEADS:
            raise ValueError(f"attention block width {width} is not divisible by SD1's {UNET_HEADS} heads")
    config = sd15_config("unet")
    config.update(
        in_channels=sd["conv_in.weight"].shape[1],
        out_channels=sd["conv_out.weight"].shape[0],
        block_out_channels=widths,
        layers_per_block=layout.layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in layout.down_attention],
        up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in layout.up_attention],
        cross_attention_dim=sd["mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape[1],
        attention_head_dim=UNET_HEADS,
    )
    if sd["mid_block.attentions.0.proj_in.weight"].ndim == 2:
        config["use_linear_projection"] = True
    depth = _count(keys, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    if depth != 1:
        config["transformer_layers_per_block"] = depth
    time_dim = sd["time_embedding.linear_1.weight"].shape[0]
    if time_dim != 4 * widths[0]:
        config["time_embedding_dim"] = time_dim
    return config


def infer_vae_config(sd):
    """AutoencoderKL config for a diffusers-layout SD1.x VAE state dict."""
    n_blocks, per = vae_shape_from_diffusers(list(sd))
    config = sd15_config("vae")
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


def infer_text_config(sd):
    """CLIPTextConfig fields for a transformers-5-layout CLIP text encoder state dict (no ``text_model.``)."""
    vocab, hidden = sd["embeddings.token_embedding.weight"].shape
    config = sd15_config("text_encoder")
    config.update(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=sd["embeddings.position_embedding.weight"].shape[0],
        num_hidden_layers=_count(sd, r"encoder\.layers\.(\d+)\."),
        intermediate_size=sd["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_attention_heads=text_heads(hidden),
        projection_dim=hidden,
    )
    return config


def text_heads(hidden):
    """Attention heads of a CLIP text encoder of width ``hidden`` (64-wide heads; one if narrower)."""
    if hidden < TEXT_HEAD_DIM:
        return 1
    if hidden % TEXT_HEAD_DIM:
        raise ValueError(f"text-encoder width {hidden} is not a multiple of CLIP's {TEXT_HEAD_DIM}-wide heads")
    return hidden // TEXT_HEAD_DIM
