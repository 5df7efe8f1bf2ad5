"""LoRA files merged into a `Model` and a `Clip`, as ComfyUI's ``LoraLoader`` merges them.

A LoRA layer adapts one weight W of the UNet or of a text encoder with two small matrices, ``up``
[out, rank] and ``down`` [rank, in] (convolution kernels flattened), and an optional ``alpha``:

    W' = W + strength · (alpha / rank) · up @ down        (alpha defaults to rank: a scale of 1)

computed in float32 and rounded once to W's dtype. ``strength_model`` applies to UNet layers,
``strength_clip`` to text-encoder layers. LyCORIS' Tucker convolutions (``lora_mid``, a [rank, rank, kh,
kw] core between a 1x1 ``down`` and ``up``) are folded into ``down`` first; rank is still ``down``'s.

Layer names, all the forms ComfyUI's ``comfy/lora.py`` maps for SD1.x/SD2.x/SDXL:

* kohya / A1111: ``lora_unet_<module>`` with dots as underscores, the module named in diffusers'
  layout (kohya's SD1 trainer) or the original LDM layout (its SDXL trainer, ``input_blocks_4_1_...``);
  ``lora_te_``/``lora_te1_`` for the (first) text encoder, ``lora_te2_`` for SDXL's OpenCLIP bigG;
  ``lycoris_<module>`` (SimpleTuner);
* diffusers / PEFT: ``unet.<module>`` (or no prefix), ``text_encoder.<module>``, ``text_encoder_2.<module>``;
  attention layers also in diffusers' older ``attn1.processor.to_q_lora.up.weight`` form;
* ComfyUI's own: ``diffusion_model.<LDM module>``, ``text_encoders.clip_l.transformer.<module>``.

and the weight pairs ``.lora_up/.lora_down.weight``, ``.lora_B/.lora_A.weight``, ``.lora.up/.down.weight``,
``_lora.up/.down.weight``, ``.lora_linear_layer.up/.down.weight``, with ``.alpha``. One difference:
ComfyUI 0.3.64 maps diffusers-named UNet attention layers only in the ``processor.`` form, so it leaves
the PEFT form (``attn1.to_q.lora_A.weight``, what diffusers' trainers save) unloaded with a warning;
these are applied here, as diffusers' ``load_lora_weights`` applies them.

The wrappers returned share every tensor they do not patch with the ones given, which stay unchanged
(the headless executor caches the loader's outputs across runs).
"""
import copy
import logging
import math
from dataclasses import dataclass, field

import torch

from ..acceleration import UNetRunner
from ..errors import CheckpointError
from .keymaps import unet_ldm_names

log = logging.getLogger(__name__)

# Key endings of one layer's tensors → their role.
SUFFIXES = (
    (".lora_up.weight", "up"), (".lora_down.weight", "down"), (".lora_mid.weight", "mid"),
    (".lora_B.weight", "up"), (".lora_A.weight", "down"),
    (".lora.up.weight", "up"), (".lora.down.weight", "down"),
    ("_lora.up.weight", "up"), ("_lora.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"), (".lora_linear_layer.down.weight", "down"),
    (".alpha", "alpha"),
)
# Adapters ComfyUI also applies but this loader does not: dropping them would change the result, so a
# file holding them is refused by name.
UNSUPPORTED = (
    (".dora_scale", "DoRA"), (".hada_w1_a", "LoHa (LyCORIS)"), (".lokr_w1", "LoKr (LyCORIS)"),
    (".lokr_w1_a", "LoKr (LyCORIS)"), (".a1.weight", "GLoRA"), (".diff", "full weight difference"),
    (".diff_b", "bias difference"), (".w_norm", "norm difference"), (".set_weight", "weight replacement"),
)
# The text-encoder layers LoRA trainers adapt (ComfyUI's LORA_CLIP_MAP): attention and MLP projections.
TEXT_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
# Text-embedding width → the family whose UNet cross-attends to it, for "a LoRA of another family".
CONTEXT_FAMILIES = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL", 1280: "SDXL refiner"}


@dataclass
class LoraLayer:
    """One adapted weight's tensors, as in the file."""

    keys: list = field(default_factory=list)
    up: torch.Tensor = None
    down: torch.Tensor = None
    mid: torch.Tensor = None
    alpha: float = None

    @property
    def in_numel(self):
        """Elements per output row of the weight it adapts (in features × kernel)."""
        kernel = math.prod(self.mid.shape[2:]) if self.mid is not None else 1
        return math.prod(self.down.shape[1:]) * kernel

    def delta(self, shape, device, strength=1.0):
        """strength · (alpha/rank) · up @ down, float32, reshaped to the adapted weight's ``shape``
        (the scalars multiplied first, as ComfyUI does, so the float32 results agree bit for bit)."""
        up = self.up.to(device, torch.float32).flatten(1)
        down = self.down.to(device, torch.float32)
        rank = down.shape[0]
        if self.mid is not None:  # Tucker: down [r, in, 1, 1] and mid [r, r, kh, kw] → down [r, in, kh, kw]
            down = torch.einsum("ki,jkhw->jihw", down.flatten(1), self.mid.to(device, torch.float32))
        scale = 1.0 if self.alpha is None else self.alpha / rank
        return ((strength * scale) * (up @ down.flatten(1))).reshape(shape)


@dataclass
class LoraMatch:
    """What a LoRA file gave a model: patched weight names per part, and the file keys left unused."""

    unet: dict = field(default_factory=dict)  # UNet parameter name → LoraLayer
    text: dict = field(default_factory=dict)  # (encoder attribute, parameter name) → LoraLayer
    not_loaded: list = field(default_factory=list)


def parse_layers(state, path):
    """{layer name: LoraLayer} of a LoRA state dict, and the keys that are no LoRA tensor. A file holding
    adapters this loader does not apply (DoRA, LoHa, LoKr, ...) is refused naming them."""
    layers, other = {}, []
    for key, tensor in state.items():
        kind = next((name for end, name in UNSUPPORTED if key.endswith(end)), None)
        if kind is not None:
            raise CheckpointError(path, f"holds {kind} weights ({key}), which sld run does not apply "
                                        "(plain LoRA and LoCon are supported)")
        end, role = next(((e, r) for e, r in SUFFIXES if key.endswith(e)), (None, None))
        if role is None:
            other.append(key)
            continue
        layer = layers.setdefault(key[: -len(end)], LoraLayer())
        layer.keys.append(key)
        if role == "alpha":
            layer.alpha = float(tensor.float().reshape(-1)[0])
        else:
            setattr(layer, role, tensor)
    for name, layer in list(layers.items()):
        if layer.up is None or layer.down is None:  # an alpha alone, or half a pair: nothing to apply
            other += layers.pop(name).keys
            continue
        if layer.up.ndim < 2 or layer.down.ndim < 2 or layer.up.flatten(1).shape[1] != layer.down.shape[0]:
            raise CheckpointError(path, f"is not a valid LoRA: layer {name} has up {list(layer.up.shape)} and down "
                                        f"{list(layer.down.shape)}, whose ranks differ")
    return layers, other


# --- layer names ------------------------------------------------------------------------------------

def unet_layer_names(unet):
    """{LoRA layer name: UNet parameter name} for every weight of a diffusers UNet, in every naming."""
    weights = [k for k, _ in unet.named_parameters() if k.endswith(".weight")]
    ldm = {d: l for l, d in unet_ldm_names([k for k, _ in unet.named_parameters()]).items()}
    names = {}
    for key in weights:
        module, ldm_module = key[: -len(".weight")], ldm[key][: -len(".weight")]
        processor = module.replace(".to_", ".processor.to_").removesuffix(".to_out.0") + (
            ".to_out" if module.endswith(".to_out.0") else "")
        for name in (f"lora_unet_{module.replace('.', '_')}", f"lora_unet_{ldm_module.replace('.', '_')}",
                     f"lycoris_{module.replace('.', '_')}", f"diffusion_model.{ldm_module}",
                     module, f"unet.{module}", processor, f"unet.{processor}"):
            names.setdefault(name, key)
    return names


def text_encoders(clip):
    """(attribute of ``clip`` holding it, or None for ``clip`` itself; the `clip.Clip`; kohya prefixes;
    diffusers/ComfyUI prefixes) per text encoder, as ComfyUI names them for each family."""
    from .sdxl_clip import RefinerClip

    if hasattr(clip, "clip_l") and hasattr(clip, "clip_g"):  # SDXL base
        return [("clip_l", clip.clip_l, ("lora_te_", "lora_te1_"),
                 ("text_encoder.", "text_encoders.clip_l.transformer.")),
                ("clip_g", clip.clip_g, ("lora_te2_",), ("text_encoder_2.", "text_encoders.clip_g.transformer."))]
    if isinstance(clip, RefinerClip):  # bigG alone: named as a first text encoder
        return [(None, clip, ("lora_te_",), ("text_encoder.", "text_encoders.clip_g.transformer."))]
    return [(None, clip, ("lora_te_", "lora_te1_"),
             ("text_encoder.", "text_encoders.clip_l.transformer.", "text_encoders.clip_h.transformer."))]


def text_layer_names(clip):
    """{LoRA layer name: (encoder attribute, parameter name)} for the adaptable text-encoder weights."""
    names = {}
    for attribute, encoder, kohya, dotted in text_encoders(clip):
        for key, _ in encoder.text_encoder.named_parameters():
            module = key.removesuffix(".weight").removeprefix("text_model.")  # transformers 5 drops text_model.
            layer = module.split(".", 3)[-1] if module.startswith("encoder.layers.") else None
            if layer in TEXT_LAYERS:
                for name in [f"{p}text_model_{module.replace('.', '_')}" for p in kohya] + [
                        f"{p}text_model.{module}" for p in dotted]:
                    names.setdefault(name, (attribute, key))
            elif module == "text_projection":  # OneTrainer saves it for SDXL
                for p in kohya:
                    names.setdefault(f"{p}text_projection", (attribute, key))
    return names


# --- matching and merging ---------------------------------------------------------------------------

def match_layers(layers, other, model=None, clip=None, path=""):
    """Which model weight each LoRA layer adapts (`LoraMatch`). Every matched layer must fit its weight:
    one that does not is a LoRA of another architecture, and the file is refused naming the layer."""
    match = LoraMatch(not_loaded=list(other))
    unet_names = unet_layer_names(model.unet) if model is not None else {}
    text_names = text_layer_names(clip) if clip is not None else {}
    unet_params = dict(model.unet.named_parameters()) if model is not None else {}
    for name, layer in layers.items():
        if name in unet_names:
            target = unet_names[name]
            weight, found = unet_params[target], match.unet
        elif name in text_names:
            target = text_names[name]
            attribute, key = target
            encoder = getattr(clip, attribute) if attribute else clip
            weight, found = encoder.text_encoder.get_parameter(key), match.text
        else:
            match.not_loaded += layer.keys
            continue
        if layer.up.shape[0] != weight.shape[0] or layer.up.shape[0] * layer.in_numel != weight.numel():
            theirs = f"{weight.shape[0]}x{weight.numel() // weight.shape[0]} ({list(weight.shape)})"
            raise CheckpointError(path, f"does not fit this model: its layer {name} adapts a {layer.up.shape[0]}x"
                                        f"{layer.in_numel} weight, the model's is {theirs}"
                                        f"{_family_hint(layers) or ' (a LoRA of another model family?)'}")
        if target in found:  # the same weight under two names: ComfyUI adds both
            found[target] = [*_as_list(found[target]), layer]
        else:
            found[target] = layer
    return match


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _family_hint(layers):
    """"(an SDXL LoRA?)" from the text width its cross-attention keys take, where one says it."""
    for name, layer in layers.items():
        if ("attn2_to_k" in name or "attn2.to_k" in name) and layer.down.ndim == 2:
            family = CONTEXT_FAMILIES.get(layer.down.shape[1])
            if family:
                return f" (its cross-attention takes {layer.down.shape[1]}-wide text embeddings: an {family} LoRA?)"
    if any(n.startswith(("lora_te2_", "text_encoder_2.")) for n in layers):
        return " (it adapts a second text encoder: an SDXL LoRA?)"
    return ""


def merged(weight, layers, strength):
    """W + strength · Σ deltas, in float32, rounded once to W's dtype (a new tensor; W is untouched)."""
    total = weight.to(torch.float32, copy=True)
    for layer in _as_list(layers):
        total += layer.delta(weight.shape, weight.device, strength)
    return total.to(weight.dtype)


def with_weights(module, weights):
    """A copy of ``module`` holding ``weights`` ({parameter name: tensor}) in place of its own. Every other
    parameter and buffer is the same tensor as in ``module`` (sub-modules are copied, tensors are not);
    ``module`` itself is not changed."""
    memo = {}

    def clone(m):
        if id(m) not in memo:
            c = copy.copy(m)
            memo[id(m)] = c
            c.__dict__["_parameters"] = dict(m._parameters)
            c.__dict__["_buffers"] = dict(m._buffers)
            c.__dict__["_modules"] = {n: None if s is None else clone(s) for n, s in m._modules.items()}
        return memo[id(m)]

    out = clone(module)
    for name, tensor in weights.items():
        owner, _, leaf = name.rpartition(".")
        out.get_submodule(owner)._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)
    return out


def patched_model(model, unet_layers, strength):
    """A `Model` whose UNet has the LoRA layers merged; same schedule, execution options and names."""
    params = dict(model.unet.named_parameters())
    unet = with_weights(model.unet, {k: merged(params[k], v, strength) for k, v in unet_layers.items()})
    clone = copy.copy(model)
    clone.unet = unet
    clone.runner = UNetRunner(unet, model.runner.options)  # compiled graphs would hold the old weights
    return clone


def patched_clip(clip, text_layers, strength):
    """A CLIP whose text encoders have the LoRA layers merged; its layer choice and tokenizer are kept."""
    clone = copy.copy(clip)
    for attribute, encoder, _, _ in text_encoders(clip):
        ours = {key: layers for (attr, key), layers in text_layers.items() if attr == attribute}
        if not ours:
            continue
        params = dict(encoder.text_encoder.named_parameters())
        new = copy.copy(encoder)
        new.text_encoder = with_weights(encoder.text_encoder, {k: merged(params[k], v, strength) for k, v in ours.items()})
        if attribute:
            setattr(clone, attribute, new)
        else:
            clone = new
    return clone


def apply_lora(state, model=None, clip=None, strength_model=1.0, strength_clip=1.0, path="LoRA"):
    """(model, clip, `LoraMatch`) with the LoRA state dict ``state`` merged (ComfyUI's
    ``load_lora_for_models``); ``model``/``clip`` may be None (LoraLoaderModelOnly gives no clip), and a
    part whose strength is 0 is returned as it is. Raises `CheckpointError` for a file with no layer of
    this model, or with one that does not fit it. Keys that name no layer of the model are listed in
    ``not_loaded`` (ComfyUI logs each as "lora key not loaded")."""
    layers, other = parse_layers(state, path)
    if not layers:
        raise CheckpointError(path, f"holds no LoRA weights (none of its {len(state)} tensors is an up/down pair)")
    match = match_layers(layers, other, model, clip, path)
    if not match.unet and not match.text:
        parts = "the UNet or the text encoders" if clip is not None else "the UNet"
        raise CheckpointError(path, f"has no layer of {parts} of this model: none of its {len(layers)} layers "
                                    f"matches one (first: {next(iter(layers))}){_family_hint(layers)}")
    if model is not None and match.unet and strength_model != 0:
        model = patched_model(model, match.unet, strength_model)
    if clip is not None and match.text and strength_clip != 0:
        clip = patched_clip(clip, match.text, strength_clip)
    return model, clip, match
