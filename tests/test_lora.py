"""LoRA merging (sld_core.models.lora) against the merge formula and against diffusers.

LoRA files are made here from seeded low-rank updates of every Linear/Conv2d layer of a tiny SD1.x and
a tiny SDXL model (UNet and text encoders), in kohya's format (SD1: diffusers module names; SDXL: the
LDM names of its trainer; ``.alpha`` ≠ rank) and in diffusers/PEFT's (``lora_A``/``lora_B``, no alpha).
Two independent references:

* the closed form W' = W + strength · (alpha/rank) · up @ down, in float64, layer by layer;
* diffusers' ``load_lora_weights`` + ``fuse_lora`` on a pipeline of the same tiny modules (the UNet with
  ``strength_model``, the text encoders with ``strength_clip``), whole state dicts within 1e-5, and the
  patched modules' outputs.

Every weight the LoRA does not touch stays the very tensor of the model it came from, and the model
given is left unchanged (the headless executor caches it).
"""
import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)
import torch

from comfyui_sld.sld_core.errors import CheckpointError
from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
from comfyui_sld.sld_core.models.keymaps import unet_ldm_names
from comfyui_sld.sld_core.models.lora import apply_lora
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.models.sdxl_clip import SDXLClip

RANK = 3
STRENGTH_MODEL, STRENGTH_CLIP = 0.7, -0.4
TEXT_PARTS = {"SD1.x": ("text_encoder",), "SDXL": ("text_encoder", "text_encoder_2")}
KOHYA_TEXT = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def linear_or_conv(module, text=False):
    """{module path: weight shape} of the layers a LoRA adapts (text encoders: attention and MLP only)."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            name = name.removeprefix("text_model.")
            if not text or name.startswith("encoder.layers."):
                out[name] = tuple(m.weight.shape)
    return out


def updates(parts, seed, alpha=None):
    """{(part, module path): (up, down, alpha)}: seeded rank-3 updates of every adaptable layer; ``alpha``
    one value for every layer (kohya's network_alpha), or None for a random one per layer."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for part, module in parts.items():
        if part == "vae":
            continue
        for path, shape in linear_or_conv(module, text=part != "unet").items():
            kernel = shape[2:]
            down = torch.randn(RANK, shape[1], *kernel, generator=g) * 0.2
            up = torch.randn(shape[0], RANK, *([1] * len(kernel)), generator=g) * 0.2
            out[part, path] = up, down, alpha or 1.0 + torch.rand(1, generator=g).item() * 4  # alpha ≠ rank
    return out


def kohya_file(ups, unet, ldm_names):
    """kohya's keys: lora_unet_<module> (diffusers names, or LDM names as its SDXL trainer writes them)."""
    ldm = {d: l for l, d in unet_ldm_names([k for k, _ in unet.named_parameters()]).items()}
    state = {}
    for (part, path), (up, down, alpha) in ups.items():
        if part == "unet":
            module = ldm[path + ".weight"][: -len(".weight")] if ldm_names else path
            name = "lora_unet_" + module.replace(".", "_")
        else:
            name = KOHYA_TEXT[part] + "text_model_" + path.replace(".", "_")
        state |= {f"{name}.lora_up.weight": up, f"{name}.lora_down.weight": down, f"{name}.alpha": torch.tensor(alpha)}
    return state


def peft_file(ups):
    """diffusers/PEFT keys: unet.<module>.lora_A/B.weight, text_encoder(_2).text_model.<module>...; no alpha."""
    state = {}
    for (part, path), (up, down, _) in ups.items():
        name = f"unet.{path}" if part == "unet" else f"{part}.text_model.{path}"
        state |= {f"{name}.lora_B.weight": up, f"{name}.lora_A.weight": down}
    return state


def old_diffusers_file(ups):
    """diffusers' older attention-processor keys: unet.<block>.attn1.processor.to_q_lora.down.weight."""
    state = {}
    for (part, path), (up, down, _) in ups.items():
        if part == "unet" and ".to_" in path:
            name = "unet." + path.replace(".to_", ".processor.to_").replace(".to_out.0", ".to_out")
            state |= {f"{name}_lora.up.weight": up, f"{name}_lora.down.weight": down}
    return state


FORMATS = {
    ("SD1.x", "kohya"): lambda ups, unet: kohya_file(ups, unet, ldm_names=False),
    ("SD1.x", "peft"): lambda ups, unet: peft_file(ups),
    ("SD1.x", "diffusers-attn-procs"): lambda ups, unet: old_diffusers_file(ups),
    ("SDXL", "kohya"): lambda ups, unet: kohya_file(ups, unet, ldm_names=True),
    ("SDXL", "peft"): lambda ups, unet: peft_file(ups),
}
HAS_ALPHA = {"kohya"}


def build(family):
    """Fresh tiny modules of ``family`` (seed 0): {"unet", "vae", text encoders}."""
    if family == "SDXL":
        return tiny_families.build("SDXL")
    from conftest import build_tiny_components  # noqa: PLC0415 (tests/conftest.py, on pytest's pythonpath)

    return build_tiny_components(seed=0)


def wrap(family, parts):
    tokenizer = load_clip_tokenizer()
    if family == "SDXL":
        return Model(parts["unet"]), SDXLClip(tokenizer, parts["text_encoder"], parts["text_encoder_2"])
    return Model(parts["unet"]), Clip(tokenizer, parts["text_encoder"])


def encoders(family, clip):
    """{part: the patched text encoder module} of a headless CLIP."""
    if family == "SDXL":
        return {"text_encoder": clip.clip_l.text_encoder, "text_encoder_2": clip.clip_g.text_encoder}
    return {"text_encoder": clip.text_encoder}


def diffusers_fused(family, parts, state):
    """diffusers' merge of ``state`` into a pipeline of ``parts``: UNet at STRENGTH_MODEL, text encoders
    at STRENGTH_CLIP (fuse_lora per component), LoRA layers unloaded so plain weights remain."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    tokenizer = load_clip_tokenizer()
    common = dict(vae=parts["vae"], unet=parts["unet"], scheduler=EulerDiscreteScheduler(), tokenizer=tokenizer,
                  text_encoder=parts["text_encoder"])
    if family == "SDXL":
        pipe = StableDiffusionXLPipeline(**common, text_encoder_2=parts["text_encoder_2"], tokenizer_2=tokenizer)
    else:
        pipe = StableDiffusionPipeline(**common, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.load_lora_weights({k: v.clone() for k, v in state.items()})
    pipe.fuse_lora(components=["unet"], lora_scale=STRENGTH_MODEL)
    pipe.fuse_lora(components=list(TEXT_PARTS[family]), lora_scale=STRENGTH_CLIP)
    pipe.unload_lora_weights()
    return parts


def max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def merged_as_the_formula(family, parts, ups, fmt, model, clip):
    """The patched modules, after checking every weight: W + strength·(alpha/rank)·up@down (float64) where
    a layer was adapted, else the model's own tensor (shared, not copied)."""
    new_model, new_clip, match = apply_lora(FORMATS[family, fmt](ups, parts["unet"]), model, clip,
                                            STRENGTH_MODEL, STRENGTH_CLIP)
    if fmt == "diffusers-attn-procs":  # that format has attention layers only
        ups = {k: v for k, v in ups.items() if k[0] == "unet" and ".to_" in k[1]}
    assert match.not_loaded == []
    assert len(match.unet) + len(match.text) == len(ups)
    patched = {"unet": new_model.unet, **encoders(family, new_clip)}
    for part, module in patched.items():
        original = dict(parts[part].named_parameters())
        for name, weight in module.named_parameters():
            path = name.removesuffix(".weight").removeprefix("text_model.")
            if (part, path) not in ups or not name.endswith(".weight"):
                assert weight is original[name]  # shared, not copied
                continue
            up, down, alpha = ups[part, path]
            scale = (alpha / RANK if fmt in HAS_ALPHA else 1.0) * (STRENGTH_MODEL if part == "unet" else STRENGTH_CLIP)
            expected = original[name].double() + scale * (up.double().flatten(1) @ down.double().flatten(1)).reshape(weight.shape)
            assert (weight.double() - expected).abs().max() < 1e-6, name
    return patched


def test_each_layer_has_its_own_alpha():
    parts = build("SDXL")
    model, clip = wrap("SDXL", parts)
    merged_as_the_formula("SDXL", parts, updates(parts, seed=5), "kohya", model, clip)


@pytest.mark.parametrize("family,fmt", list(FORMATS))
def test_lora_merges_as_the_formula_and_as_diffusers(family, fmt):
    parts = build(family)
    # One alpha for all layers, as kohya's trainer writes (network_alpha): diffusers 0.42 files per-layer
    # alphas of attention and text layers under module names PEFT never matches, and falls back to one.
    ups = updates(parts, seed=1, alpha=1.5)
    state = FORMATS[family, fmt](ups, parts["unet"])
    model, clip = wrap(family, parts)
    before = {part: {k: v.clone() for k, v in m.state_dict().items()} for part, m in parts.items()}
    patched = merged_as_the_formula(family, parts, ups, fmt, model, clip)
    for part, m in parts.items():  # the model given is unchanged
        assert max_difference(m.state_dict(), before[part]) == 0

    reference = diffusers_fused(family, build(family), state)
    for part, module in patched.items():
        assert max_difference(module.state_dict(), reference[part].state_dict()) < 1e-5, part
    # The patched modules run with their new weights: outputs equal diffusers' fused modules.
    ids = torch.tensor([[49406, 320, 2368, 49407] + [49407] * 73])
    for part in TEXT_PARTS[family]:
        ours, theirs = patched[part](ids).last_hidden_state, reference[part](ids).last_hidden_state
        assert (ours - theirs).abs().max() < 1e-5
    changed = not torch.equal(patched["text_encoder"](ids).last_hidden_state, parts["text_encoder"](ids).last_hidden_state)
    assert changed == (fmt != "diffusers-attn-procs")  # that format holds UNet layers only


def test_strength_zero_model_only_and_what_the_wrappers_keep():
    from comfyui_sld.sld_core.acceleration import ExecutionOptions

    parts = build("SD1.x")
    model, clip = wrap("SD1.x", parts)
    model.set_execution(ExecutionOptions(channels_last=True))
    model.checkpoint, model.family = clip.checkpoint, clip.family = "tiny.safetensors", "SD1.x"
    clip = clip.with_last_layer(-2)
    state = kohya_file(updates(parts, seed=2), parts["unet"], ldm_names=False)
    same_model, new_clip, _ = apply_lora(state, model, clip, 0.0, 1.0)
    assert same_model is model and new_clip is not clip  # a part at strength 0 is passed through
    assert (new_clip.layer, new_clip.checkpoint, new_clip.tokenizer) == (-2, "tiny.safetensors", clip.tokenizer)
    only_model, no_clip, match = apply_lora(state, model, None, 1.0, 1.0)
    assert no_clip is None and not match.text
    assert only_model.execution == model.execution and only_model.runner is not model.runner
    assert only_model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    for name in ("schedule", "latent_scale", "added_conditioning", "checkpoint", "family"):
        assert getattr(only_model, name) is getattr(model, name), name
    assert sorted(match.not_loaded) == sorted(k for k in state if k.startswith("lora_te"))  # logged, not applied


def test_locon_tucker_mid_is_folded_into_down():
    """LyCORIS' Tucker conv (lora_mid): ΔW[o,i,h,w] = Σ up[o,j] mid[j,k,h,w] down[k,i] · alpha/rank."""
    parts = build("SD1.x")
    model, _ = wrap("SD1.x", parts)
    conv = parts["unet"].down_blocks[0].resnets[0].conv1
    out_c, in_c = conv.weight.shape[:2]
    g = torch.Generator().manual_seed(3)
    up, mid, down = (torch.randn(out_c, 2, 1, 1, generator=g), torch.randn(2, 2, 3, 3, generator=g),
                     torch.randn(2, in_c, 1, 1, generator=g))
    name = "lora_unet_down_blocks_0_resnets_0_conv1"
    state = {f"{name}.lora_up.weight": up, f"{name}.lora_mid.weight": mid, f"{name}.lora_down.weight": down,
             f"{name}.alpha": torch.tensor(1.0)}
    new_model, _, _ = apply_lora(state, model, None, 0.5)
    delta = torch.einsum("oj,jkhw,ki->oihw", up.double().flatten(1), mid.double(), down.double().flatten(1))
    got = new_model.unet.down_blocks[0].resnets[0].conv1.weight.double() - conv.weight.double()
    assert (got - 0.5 * 0.5 * delta).abs().max() < 1e-5


def test_a_lora_of_another_family_is_refused():
    sd1, sdxl = build("SD1.x"), build("SDXL")
    model, clip = wrap("SD1.x", sd1)
    state = kohya_file(updates(sdxl, seed=4), sdxl["unet"], ldm_names=True)
    with pytest.raises(CheckpointError, match="does not fit this model: its layer lora_"):
        apply_lora(state, model, clip, 1.0, 1.0, "sdxl_lora.safetensors")
    text_only = {k: v for k, v in state.items() if k.startswith("lora_te2_")}
    with pytest.raises(CheckpointError, match="has no layer of the UNet or the text encoders.*SDXL"):
        apply_lora(text_only, model, clip, 1.0, 1.0, "sdxl_lora.safetensors")


@pytest.mark.parametrize("key,kind", [("lora_unet_conv_in.dora_scale", "DoRA"), ("lora_unet_conv_in.hada_w1_a", "LoHa")])
def test_adapters_we_do_not_apply_are_refused_by_name(key, kind):
    model, clip = wrap("SD1.x", build("SD1.x"))
    state = {"lora_unet_conv_in.lora_up.weight": torch.zeros(32, 1, 1, 1),
             "lora_unet_conv_in.lora_down.weight": torch.zeros(1, 4, 3, 3), key: torch.zeros(1)}
    with pytest.raises(CheckpointError, match=kind):
        apply_lora(state, model, clip)
