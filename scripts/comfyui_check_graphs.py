"""The API-format prompts scripts/comfyui-check sends to a real ComfyUI, and the LoRA file it writes.

Kept apart from the runner so each graph reads as one function: which nodes, which links, which
SaveImage prefixes the runner compares.
"""
import json

import torch
from safetensors.torch import save_file

LOADERS = ("CheckpointLoaderSimple", "SLDCheckpointLoader")
SAMPLERS = ("SLDKSampler", "KSampler", "BasicScheduler")  # nodes whose "steps" the check sets
DEMO_CHECKPOINT = "sld_demo.safetensors"
LORA_NAME = "sd15_random_lora_seed0.safetensors"


def prepare_prompt(prompt, ckpt_name, steps, size=None):
    """The workflow with the check's checkpoint, step count and (if given) image size, identical for
    ComfyUI and `sld run`."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] in LOADERS:
            node["inputs"]["ckpt_name"] = ckpt_name
        if node["class_type"] in SAMPLERS and steps:
            node["inputs"]["steps"] = steps
        if node["class_type"] == "EmptyLatentImage" and size:
            node["inputs"].update(width=size, height=size)
    return prompt


def node_adder(prompt):
    """``node(nid, cls, **inputs)``: adds an API node to ``prompt`` and returns the link to its first output."""
    def node(nid, cls, **inputs):
        prompt[nid] = {"class_type": cls, "inputs": inputs}
        return [nid, 0]

    return node


def save_nodes(prompt):
    return {nid: n["inputs"]["filename_prefix"] for nid, n in prompt.items() if n["class_type"] == "SaveImage"}


def _decode_save(p, nid, src, vae, prefix):
    p[f"{nid}d"] = {"class_type": "VAEDecode", "inputs": {"samples": [src, 0], "vae": vae}}
    p[f"{nid}s"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": [f"{nid}d", 0]}}


def parity_prompt(base_prompt, ckpt_name, steps, size=None):
    """sld_txt2img (or a workflow with its node ids) plus ComfyUI's KSampler beside SLDKSampler(disabled),
    and SLDGuider through SamplerCustomAdvanced beside SLDKSampler(max); four SaveImage outputs."""
    p = prepare_prompt(base_prompt, ckpt_name, steps, size)
    sld = dict(p["6"]["inputs"])
    shared = {k: sld[k] for k in ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                   "negative", "latent_image", "denoise")}
    sld_params = {k: v for k, v in sld.items() if k.startswith("sld_") or k == "safety_concept"}
    for n in ("7", "8"):
        p.pop(n)
    p["6"]["inputs"]["sld_preset"] = "disabled"
    _decode_save(p, "6", "6", ["1", 2], "parity_sld_disabled")
    p["20"] = {"class_type": "KSampler", "inputs": shared}
    _decode_save(p, "20", "20", ["1", 2], "parity_ksampler")
    p["21"] = {"class_type": "SLDKSampler", "inputs": {**shared, **sld_params, "sld_preset": "max"}}
    _decode_save(p, "21", "21", ["1", 2], "parity_sld_max")
    p["22"] = {"class_type": "SLDGuider", "inputs": {k: shared[k] for k in ("model", "positive", "negative", "cfg")}
               | {**sld_params, "sld_preset": "max"}}
    p["23"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": shared["seed"]}}
    p["24"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": shared["sampler_name"]}}
    p["25"] = {"class_type": "BasicScheduler", "inputs": {"model": shared["model"], "scheduler": shared["scheduler"],
                                                          "steps": shared["steps"], "denoise": shared["denoise"]}}
    p["26"] = {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["23", 0], "guider": ["22", 0], "sampler": ["24", 0],
                                                                 "sigmas": ["25", 0], "latent_image": shared["latent_image"]}}
    _decode_save(p, "26", "26", ["1", 2], "parity_sld_guider")
    return p


def _sampled_branch(p, tag, model, clip, vae, steps, prefix):
    """CLIPTextEncode ×2 → KSampler → VAEDecode → SaveImage, then VAEEncode → VAEDecode → SaveImage."""
    p[f"{tag}_pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle on a blue square", "clip": clip}}
    p[f"{tag}_neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    p[f"{tag}_ks"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 7, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": [f"{tag}_pos", 0], "negative": [f"{tag}_neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    _decode_save(p, f"{tag}_ks", f"{tag}_ks", vae, f"{prefix}_ksampler")
    p[f"{tag}_enc"] = {"class_type": "VAEEncode", "inputs": {"pixels": [f"{tag}_ksd", 0], "vae": vae}}
    _decode_save(p, f"{tag}_enc", f"{tag}_enc", vae, f"{prefix}_vae_roundtrip")


def native_prompt(ckpt_name, steps):
    """The same graph on SLDCheckpointLoader and on CheckpointLoaderSimple: ComfyUI's LoraLoader,
    CLIPSetLastLayer, CLIPTextEncode, KSampler, VAEDecode and VAEEncode on the loader's outputs. The
    SLD loader's branch also samples once without LoRA and clip skip, to show those changed the image."""
    p = {"latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    for tag, loader in (("sld", "SLDCheckpointLoader"), ("core", "CheckpointLoaderSimple")):
        p[f"{tag}_ckpt"] = {"class_type": loader, "inputs": {"ckpt_name": ckpt_name}}
        p[f"{tag}_lora"] = {"class_type": "LoraLoader", "inputs": {
            "model": [f"{tag}_ckpt", 0], "clip": [f"{tag}_ckpt", 1], "lora_name": LORA_NAME,
            "strength_model": 1.0, "strength_clip": 1.0}}
        p[f"{tag}_skip"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": [f"{tag}_lora", 1], "stop_at_clip_layer": -2}}
        _sampled_branch(p, tag, [f"{tag}_lora", 0], [f"{tag}_skip", 0], [f"{tag}_ckpt", 2], steps, f"native_{tag}")
    _sampled_branch(p, "plain", ["sld_ckpt", 0], ["sld_ckpt", 1], ["sld_ckpt", 2], steps, "native_sld_plain")
    return p


# (label, node id, input name, the loader output linked there: 0 MODEL, 1 CLIP, 2 VAE)
MISWIRINGS = (
    ("MODEL into CLIPTextEncode.clip", "pos", "clip", 0),
    ("VAE into KSampler.model", "ks", "model", 2),
    ("CLIP into VAEDecode.vae", "dec", "vae", 1),
    ("VAE into LoraLoader.clip", "lora", "clip", 2),
    ("MODEL into SLDSafetyConcept.clip", "concept", "clip", 0),
)


def miswired_prompts(ckpt_name):
    """One valid SLDCheckpointLoader graph per entry of MISWIRINGS, with that one link moved to a loader
    output of another type: (label, prompt, node id, input name, received type)."""
    base = {
        "ckpt": {"class_type": "SLDCheckpointLoader", "inputs": {"ckpt_name": ckpt_name}},
        "lora": {"class_type": "LoraLoader", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": LORA_NAME,
                                                         "strength_model": 1.0, "strength_clip": 1.0}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a circle", "clip": ["lora", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["lora", 1]}},
        "concept": {"class_type": "SLDSafetyConcept", "inputs": {"text": "magenta", "clip": ["lora", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {
            "model": ["lora", 0], "seed": 0, "steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}},
        "sld": {"class_type": "SLDKSampler", "inputs": {
            "model": ["lora", 0], "seed": 0, "steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["ks", 0], "denoise": 1.0,
            "safety_concept": ["concept", 0], "sld_preset": "medium", "sld_guidance_scale": 1000.0,
            "sld_warmup_steps": 10, "sld_threshold": 0.01, "sld_momentum_scale": 0.3, "sld_momentum_beta": 0.4}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["sld", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"filename_prefix": "miswired", "images": ["dec", 0]}},
    }
    out = []
    for label, node_id, input_name, slot in MISWIRINGS:
        p = json.loads(json.dumps(base))
        p[node_id]["inputs"][input_name] = ["ckpt", slot]
        out.append((label, p, node_id, input_name, ("MODEL", "CLIP", "VAE")[slot]))
    return out


def demo_prompt(base_prompt, steps):
    """sld_txt2img on SLDCheckpointLoader's embedded demo model, with ComfyUI's KSampler beside
    SLDKSampler and a VAEEncode round trip: run by ComfyUI and by `sld run`, compared per image."""
    p = prepare_prompt(base_prompt, DEMO_CHECKPOINT, steps)
    p["1"]["class_type"] = "SLDCheckpointLoader"
    p["8"]["inputs"]["filename_prefix"] = "demo_sld_medium"
    shared = {k: p["6"]["inputs"][k] for k in ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive",
                                                "negative", "latent_image", "denoise")}
    p["20"] = {"class_type": "KSampler", "inputs": shared}
    _decode_save(p, "20", "20", ["1", 2], "demo_ksampler")
    p["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20d", 0], "vae": ["1", 2]}}
    _decode_save(p, "21", "21", ["1", 2], "demo_vae_roundtrip")
    return p


def sd15_lora_shapes():
    """Kohya-format module names of SD1.5 → (out, in) of the Linear each adapts: self- and
    cross-attention in three UNet blocks of different widths, attention and MLP in three CLIP layers."""
    shapes = {}
    for block, dim in (("down_blocks_0_attentions_0", 320), ("mid_block_attentions_0", 1280), ("up_blocks_3_attentions_2", 320)):
        stem = f"lora_unet_{block}_transformer_blocks_0_"
        for proj in ("to_q", "to_k", "to_v", "to_out_0"):
            shapes[f"{stem}attn1_{proj}"] = (dim, dim)
        shapes[f"{stem}attn2_to_q"] = (dim, dim)
        shapes[f"{stem}attn2_to_k"] = shapes[f"{stem}attn2_to_v"] = (dim, 768)
    for layer in (0, 5, 10):
        stem = f"lora_te_text_model_encoder_layers_{layer}_"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{stem}self_attn_{proj}"] = (768, 768)
        shapes[f"{stem}mlp_fc1"], shapes[f"{stem}mlp_fc2"] = (3072, 768), (768, 3072)
    return shapes


KOHYA = (".lora_down.weight", ".lora_up.weight")  # (down, up) key suffixes
PEFT = (".lora_A.weight", ".lora_B.weight")


def write_random_lora(path, shapes, seed, names=KOHYA, rank=4, alpha=None):
    """A seeded random rank-`rank` LoRA, float16, for the layers `shapes` ({name: weight shape}; conv
    kernels as [out, in, kh, kw]) with the key suffixes `names`; `alpha` written per layer when given
    (kohya; scale alpha/rank), else none (PEFT; scale 1). Returns the number of layers."""
    generator = torch.Generator().manual_seed(seed)
    down_name, up_name = names
    state = {}
    for name, shape in shapes.items():
        kernel = shape[2:]
        state[f"{name}{down_name}"] = torch.randn(rank, shape[1], *kernel, generator=generator) * 0.1
        state[f"{name}{up_name}"] = torch.randn(shape[0], rank, *([1] * len(kernel)), generator=generator) * 0.1
        if alpha is not None:
            state[f"{name}.alpha"] = torch.tensor(float(alpha))
    save_file({k: v.to(torch.float16) for k, v in state.items()}, str(path))
    return len(shapes)


def write_lora(path, seed=0, rank=4):
    """A seeded random rank-`rank` LoRA in kohya's format (lora_down/lora_up/alpha per module)."""
    return write_random_lora(path, sd15_lora_shapes(), seed, KOHYA, rank, alpha=rank)


def flow_model_prompt(base_prompt, ckpt_name, size=None):
    """The workflow (sld_txt2img's node ids) with ComfyUI's ModelSamplingSD3 between the loader and
    SLDKSampler: the model then samples as a flow-matching (CONST) model, which SLD must refuse."""
    p = prepare_prompt(base_prompt, ckpt_name, 1, size)
    p["flow"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": p["6"]["inputs"]["model"], "shift": 3.0}}
    p["6"]["inputs"]["model"] = ["flow", 0]
    return p
