"""The key map between SD1.x's original single-file ("LDM") layout and the diffusers/transformers layout.

The map is written once, as data: a list of module-prefix pairs (LDM prefix, diffusers prefix) plus, for
the module kinds whose parameter names differ (UNet res-blocks, VAE res-blocks and attention), a
table of renamed leading key parts. The same lists drive both directions. The pairs are generated
from a `UNetLayout` (blocks, res-blocks per block, which blocks attend) read off the keys, so
reduced-size SD1.x models map as well as full SD1.5.

Single-file prefixes: ``model.diffusion_model.`` (UNet), ``first_stage_model.`` (VAE),
``cond_stage_model.transformer.text_model.`` (CLIP-L text encoder). transformers 5 saves
``CLIPTextModel`` keys without ``text_model.``; both forms are accepted on the diffusers side.

SD2.x and SDXL use the same UNet and VAE maps (SDXL adds ``label_emb`` → ``add_embedding``, its
text_time conditioning). Their OpenCLIP text towers (SD2's ViT-H at ``cond_stage_model.model.``, SDXL's
bigG at ``conditioner.embedders.1.model.``, the refiner's at ``conditioner.embedders.0.model.``) map to
transformers' ``CLIPTextModelWithProjection`` layout (``text_model.*`` + ``text_projection.weight``):
OpenCLIP's fused attention ``in_proj`` is split into q/k/v rows (views, no copy) and its
``text_projection`` matrix (applied as ``x @ P``) becomes the transposed Linear weight. SDXL's CLIP-L at
``conditioner.embedders.0.transformer.text_model.`` is already in transformers' layout.
"""
import re
from dataclasses import dataclass

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."
_OLD_TEXT_PREFIX = "cond_stage_model.transformer."  # checkpoints saved with transformers < 4.x lack text_model.
SD2_TEXT_PREFIX = "cond_stage_model.model."
SDXL_L_PREFIX = "conditioner.embedders.0.transformer."
SDXL_G_PREFIX = "conditioner.embedders.1.model."
REFINER_G_PREFIX = "conditioner.embedders.0.model."

# Renamed leading parts of a key inside one module, (LDM, diffusers).
UNET_RESNET = (
    ("in_layers.0.", "norm1."), ("in_layers.2.", "conv1."), ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."), ("out_layers.3.", "conv2."), ("skip_connection.", "conv_shortcut."),
)
VAE_RESNET = (("nin_shortcut.", "conv_shortcut."),)
# The VAE's mid-block attention: 1x1 convs in LDM, linear layers in diffusers (weights reshaped).
VAE_ATTENTION = (
    ("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0."),
)
SAME = ()


@dataclass(frozen=True)
class UNetLayout:
    """What the key names of an SD1.x UNet depend on. Lists run in diffusers order (up blocks deepest first)."""

    layers_per_block: int
    down_attention: tuple
    up_attention: tuple

    @property
    def num_blocks(self):
        return len(self.down_attention)


def unet_pairs(layout):
    """(LDM prefix, diffusers prefix, rename table) for every module of the UNet."""
    n_blocks, per = layout.num_blocks, layout.layers_per_block
    pairs = [
        ("time_embed.0", "time_embedding.linear_1", SAME), ("time_embed.2", "time_embedding.linear_2", SAME),
        ("input_blocks.0.0", "conv_in", SAME), ("out.0", "conv_norm_out", SAME), ("out.2", "conv_out", SAME),
        ("middle_block.0", "mid_block.resnets.0", UNET_RESNET), ("middle_block.1", "mid_block.attentions.0", SAME),
        ("middle_block.2", "mid_block.resnets.1", UNET_RESNET),
        # SDXL's added conditioning (pooled text + size embeddings); absent from SD1/SD2 UNets.
        ("label_emb.0.0", "add_embedding.linear_1", SAME), ("label_emb.0.2", "add_embedding.linear_2", SAME),
    ]
    for i in range(n_blocks):
        # LDM numbers input blocks flatly: conv_in, then per level `per` res(+attn) blocks and a downsampler.
        for j in range(per):
            n = 1 + i * (per + 1) + j
            pairs.append((f"input_blocks.{n}.0", f"down_blocks.{i}.resnets.{j}", UNET_RESNET))
            if layout.down_attention[i]:
                pairs.append((f"input_blocks.{n}.1", f"down_blocks.{i}.attentions.{j}", SAME))
        if i < n_blocks - 1:
            pairs.append((f"input_blocks.{1 + i * (per + 1) + per}.0.op", f"down_blocks.{i}.downsamplers.0.conv", SAME))
        # Output blocks hold per+1 res(+attn) blocks per level; the upsampler follows the attention, if any.
        for j in range(per + 1):
            n = i * (per + 1) + j
            pairs.append((f"output_blocks.{n}.0", f"up_blocks.{i}.resnets.{j}", UNET_RESNET))
            if layout.up_attention[i]:
                pairs.append((f"output_blocks.{n}.1", f"up_blocks.{i}.attentions.{j}", SAME))
        if i < n_blocks - 1:
            slot = 2 if layout.up_attention[i] else 1
            pairs.append((f"output_blocks.{i * (per + 1) + per}.{slot}.conv", f"up_blocks.{i}.upsamplers.0.conv", SAME))
    return pairs


def vae_pairs(num_blocks, layers_per_block):
    """(LDM prefix, diffusers prefix, rename table) for every module of the VAE (AutoencoderKL)."""
    pairs = [("quant_conv", "quant_conv", SAME), ("post_quant_conv", "post_quant_conv", SAME)]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv_in", f"{part}.conv_in", SAME), (f"{part}.conv_out", f"{part}.conv_out", SAME),
            (f"{part}.norm_out", f"{part}.conv_norm_out", SAME),
            (f"{part}.mid.block_1", f"{part}.mid_block.resnets.0", VAE_RESNET),
            (f"{part}.mid.attn_1", f"{part}.mid_block.attentions.0", VAE_ATTENTION),
            (f"{part}.mid.block_2", f"{part}.mid_block.resnets.1", VAE_RESNET),
        ]
    for i in range(num_blocks):
        for j in range(layers_per_block):
            pairs.append((f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", VAE_RESNET))
        # LDM numbers decoder levels from the shallowest (like the encoder); diffusers from the deepest.
        k = num_blocks - 1 - i
        for j in range(layers_per_block + 1):
            pairs.append((f"decoder.up.{k}.block.{j}", f"decoder.up_blocks.{i}.resnets.{j}", VAE_RESNET))
        if i < num_blocks - 1:
            pairs.append((f"encoder.down.{i}.downsample.conv", f"encoder.down_blocks.{i}.downsamplers.0.conv", SAME))
            pairs.append((f"decoder.up.{k}.upsample.conv", f"decoder.up_blocks.{i}.upsamplers.0.conv", SAME))
    return pairs


def _indices(keys, pattern):
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def unet_layout_from_diffusers(keys):
    blocks = _indices(keys, r"down_blocks\.(\d+)\.")
    if not blocks:
        raise ValueError("no down_blocks.* keys: not a diffusers UNet state dict")
    return UNetLayout(
        layers_per_block=len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\.")),
        down_attention=tuple(any(k.startswith(f"down_blocks.{i}.attentions.") for k in keys) for i in blocks),
        up_attention=tuple(any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys) for i in blocks),
    )


def unet_layout_from_ldm(keys):
    """Layout of an LDM UNet (keys without prefix): input_blocks count = levels·(per+1), and the first
    downsampler (``.op``) sits at input block per+1."""
    inputs = _indices(keys, r"input_blocks\.(\d+)\.")
    if not inputs:
        raise ValueError("no input_blocks.* keys: not an LDM UNet state dict")
    ops = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.")
    per = ops[0] - 1 if ops else len(inputs) - 1
    n_blocks = len(inputs) // (per + 1)

    def attends(block):
        return any(k.startswith(f"{block}.1.proj_in.") for k in keys)

    return UNetLayout(
        layers_per_block=per,
        down_attention=tuple(attends(f"input_blocks.{1 + i * (per + 1)}") for i in range(n_blocks)),
        up_attention=tuple(attends(f"output_blocks.{i * (per + 1)}") for i in range(n_blocks)),
    )


def vae_shape_from_diffusers(keys):
    """(levels, res-blocks per encoder level) of a diffusers VAE."""
    blocks = _indices(keys, r"encoder\.down_blocks\.(\d+)\.")
    return len(blocks), len(_indices(keys, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."))


def vae_shape_from_ldm(keys):
    """(levels, res-blocks per encoder level) of an LDM VAE."""
    return len(_indices(keys, r"encoder\.down\.(\d+)\.")), len(_indices(keys, r"encoder\.down\.0\.block\.(\d+)\."))


def _rename(state_dict, pairs, to_diffusers, component):
    """Apply the prefix pairs (and their rename tables) to every key; an unmapped key is an error."""
    src, dst = (0, 1) if to_diffusers else (1, 0)
    by_prefix = sorted(pairs, key=lambda p: -len(p[src]))
    out = {}
    for key, tensor in state_dict.items():
        for pair in by_prefix:
            if key.startswith(pair[src] + "."):
                rest = key[len(pair[src]) + 1:]
                for names in pair[2]:
                    if rest.startswith(names[src]):
                        rest = names[dst] + rest[len(names[src]):]
                        break
                is_projection = rest.endswith(".weight") and not rest.startswith(("norm.", "group_norm."))
                if pair[2] is VAE_ATTENTION and is_projection:
                    tensor = _attention_weight(tensor, to_diffusers)
                out[f"{pair[dst]}.{rest}"] = tensor
                break
        else:
            raise ValueError(f"unexpected {component} weight {key!r} (not in the layout its other weights imply)")
    return out


def _attention_weight(tensor, to_diffusers):
    if to_diffusers:
        return tensor.reshape(tensor.shape[0], tensor.shape[1]) if tensor.ndim == 4 else tensor
    return tensor.reshape(*tensor.shape, 1, 1) if tensor.ndim == 2 else tensor


def _strip(state_dict, prefix):
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def unet_ldm_names(diffusers_keys):
    """{LDM key: diffusers key} for the keys of a diffusers UNet (LoRA files name modules either way)."""
    keys = list(diffusers_keys)
    return _rename({k: k for k in keys}, unet_pairs(unet_layout_from_diffusers(keys)), False, "UNet")


def ldm_vae_to_diffusers(state_dict):
    """A VAE's weights in the original layout (keys without ``first_stage_model.``) in diffusers' layout."""
    return _rename(state_dict, vae_pairs(*vae_shape_from_ldm(state_dict)), True, "VAE")


def split_text_keys(state_dict):
    """Text-encoder weights of a single-file checkpoint, keyed as transformers 5 names them (no
    ``text_model.``). ``position_ids`` (a buffer some checkpoints carry, sometimes corrupted) is dropped."""
    text = _strip(state_dict, TEXT_PREFIX)
    if not text:
        text = {k: v for k, v in _strip(state_dict, _OLD_TEXT_PREFIX).items() if not k.startswith("text_model.")}
    return {k: v for k, v in text.items() if not k.endswith("position_ids")}


# Where each family's text encoders sit in a single file: (prefix, diffusers part, OpenCLIP layout?).
TEXT_ENCODER_PREFIXES = {
    "SD1.x": (),  # split_text_keys (two historical prefixes)
    "SD2.x": ((SD2_TEXT_PREFIX, "text_encoder", True), (REFINER_G_PREFIX, "text_encoder", True)),  # LDM or sgm
    "SDXL": ((SDXL_L_PREFIX + "text_model.", "text_encoder", False), (SDXL_G_PREFIX, "text_encoder_2", True)),
    "SDXL refiner": ((REFINER_G_PREFIX, "text_encoder_2", True),),
}


def ldm_to_diffusers(state_dict, family="SD1.x"):
    """Split an original single-file state dict of ``family`` ("SD1.x", "SD2.x", "SDXL", "SDXL refiner")
    into diffusers-layout parts: "unet", "vae" and the family's text encoders ("text_encoder",
    "text_encoder_2"), each keyed as `text_encoder_keys` describes."""
    unet = _strip(state_dict, UNET_PREFIX)
    vae = {k: v for k, v in _strip(state_dict, VAE_PREFIX).items() if not k.startswith("loss.")}
    parts = {
        "unet": _rename(unet, unet_pairs(unet_layout_from_ldm(unet)), True, "UNet"),
        "vae": _rename(vae, vae_pairs(*vae_shape_from_ldm(vae)), True, "VAE"),
    }
    if family == "SD1.x":
        parts["text_encoder"] = split_text_keys(state_dict)
    for prefix, part, open_clip in TEXT_ENCODER_PREFIXES[family]:
        text = _strip(state_dict, prefix)
        if not text and part in parts:  # the other place this family's encoder may be
            continue
        if open_clip:
            parts[part] = open_clip_to_transformers(text)
        else:
            parts[part] = {k: v for k, v in text.items() if not k.endswith("position_ids")}
    return parts


def diffusers_to_ldm(unet_sd, vae_sd, text_encoder_sd=None, family="SD1.x", text_encoder_2_sd=None):
    """One original single-file state dict of ``family`` from diffusers UNet/VAE and transformers
    CLIP-text state dicts (``text_encoder_2_sd``: SDXL's bigG; the refiner has only that one)."""
    out = {}
    unet = _rename(unet_sd, unet_pairs(unet_layout_from_diffusers(unet_sd)), False, "UNet")
    out.update({UNET_PREFIX + k: v for k, v in unet.items()})
    vae = _rename(vae_sd, vae_pairs(*vae_shape_from_diffusers(vae_sd)), False, "VAE")
    out.update({VAE_PREFIX + k: v for k, v in vae.items()})
    if family == "SD1.x":
        for key, tensor in text_encoder_sd.items():
            key = key.removeprefix("text_model.")
            if not key.endswith("position_ids"):
                out[TEXT_PREFIX + key] = tensor
    sources = {"text_encoder": text_encoder_sd, "text_encoder_2": text_encoder_2_sd}
    for prefix, part, open_clip in TEXT_ENCODER_PREFIXES[family]:
        text = sources.pop(part, None)
        if text is None:  # written already (SD2: the LDM prefix, not the sgm one)
            continue
        if open_clip:
            out.update({prefix + k: v for k, v in transformers_to_open_clip(text).items()})
        else:
            out.update({prefix + k.removeprefix("text_model."): v for k, v in text.items()
                        if not k.endswith("position_ids")})
    return out


# --- OpenCLIP text towers ----------------------------------------------------------------------------

OPEN_CLIP_LAYER = (
    ("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
)
OPEN_CLIP_TOP = (
    ("positional_embedding", "embeddings.position_embedding.weight"),
    ("token_embedding.weight", "embeddings.token_embedding.weight"),
    ("ln_final.weight", "final_layer_norm.weight"), ("ln_final.bias", "final_layer_norm.bias"),
)
_QKV = ("q_proj", "k_proj", "v_proj")
# Not weights of the text tower: the CLIP loss temperature, the causal mask (a buffer), image tower weights.
_OPEN_CLIP_IGNORED = ("logit_scale", "attn_mask")


def open_clip_to_transformers(state_dict):
    """An OpenCLIP text tower (keys without their checkpoint prefix) in ``CLIPTextModelWithProjection``
    layout. The fused ``in_proj`` [3w, …] becomes q, k, v rows; ``text_projection`` [w, p] becomes
    ``text_projection.weight`` [p, w]. Tensors are views of the inputs (``narrow``/``transpose``)."""
    top = dict(OPEN_CLIP_TOP)
    out = {}
    for key, tensor in state_dict.items():
        if key in _OPEN_CLIP_IGNORED or key.startswith("visual."):
            continue
        if key in top:
            out["text_model." + top[key]] = tensor
        elif key == "text_projection":  # a parameter used as x @ P
            out["text_projection.weight"] = tensor.transpose(0, 1)
        elif key == "text_projection.weight":  # saved as a Linear
            out["text_projection.weight"] = tensor
        elif key.startswith("transformer.resblocks."):
            index, rest = key[len("transformer.resblocks."):].split(".", 1)
            layer = f"text_model.encoder.layers.{index}."
            if rest.startswith("attn.in_proj_"):
                width = tensor.shape[0] // 3
                for i, name in enumerate(_QKV):
                    out[f"{layer}self_attn.{name}.{rest.rsplit('_', 1)[1]}"] = tensor.narrow(0, i * width, width)
                continue
            for ours, theirs in OPEN_CLIP_LAYER:
                if rest.startswith(ours):
                    out[layer + theirs + rest[len(ours):]] = tensor
                    break
            else:
                raise ValueError(f"unexpected OpenCLIP text weight {key!r}")
        else:
            raise ValueError(f"unexpected OpenCLIP text weight {key!r}")
    return out


def transformers_to_open_clip(state_dict):
    """The inverse of `open_clip_to_transformers` (q/k/v concatenated back into ``in_proj``)."""
    top = {theirs: ours for ours, theirs in OPEN_CLIP_TOP}
    out, fused = {}, {}
    for key, tensor in state_dict.items():
        key = key.removeprefix("text_model.")
        if key.endswith("position_ids"):
            continue
        if key in top:
            out[top[key]] = tensor
        elif key == "text_projection.weight":
            out["text_projection"] = tensor.transpose(0, 1).contiguous()
        elif key.startswith("encoder.layers."):
            index, rest = key[len("encoder.layers."):].split(".", 1)
            block = f"transformer.resblocks.{index}."
            projection, _, kind = rest.rpartition(".")
            if projection.removeprefix("self_attn.") in _QKV:
                fused.setdefault((block, kind), {})[projection.removeprefix("self_attn.")] = tensor
                continue
            for ours, theirs in OPEN_CLIP_LAYER:
                if rest.startswith(theirs):
                    out[block + ours + rest[len(theirs):]] = tensor
                    break
            else:
                raise ValueError(f"unexpected CLIP text weight {key!r}")
        else:
            raise ValueError(f"unexpected CLIP text weight {key!r}")
    for (block, kind), parts in fused.items():
        out[f"{block}attn.in_proj_{kind}"] = torch.cat([parts[name] for name in _QKV])
    return out
