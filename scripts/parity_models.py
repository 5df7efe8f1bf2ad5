"""Node parity for the model nodes (area "models" of `comfyui-check --node-parity`): LoraLoader (kohya and
diffusers/PEFT files), LoraLoaderModelOnly, CLIPSetLastLayer and VAELoader, on the random full-size SD1.5.

`prepare_files` writes, beside the kohya LoRA comfyui-check always writes (LORA_NAME), a seeded PEFT-format
LoRA (``unet.<module>.lora_A/B.weight``, ``text_encoder.text_model.<module>...``) and a VAE file: the
checkpoint's own VAE with a seeded perturbation, in the original layout, so that its images differ from the
checkpoint VAE's. The PEFT file adapts the UNet's non-attention layers and the text encoder's attention and
MLP: ComfyUI 0.3.64 maps diffusers-named UNet attention layers only in the ``processor.to_q`` form and
leaves PEFT's ``attn1.to_q.lora_A`` unloaded, where sld run applies them as diffusers does
(sld_core/models/lora.py), so those would differ by design.
"""
from pathlib import Path

import torch
from comfyui_check_graphs import LORA_NAME, PEFT, _decode_save, node_adder, prepare_prompt, write_random_lora
from safetensors import safe_open
from safetensors.torch import save_file

FAMILY = "sd15"
PEFT_LORA = "sd15_random_peft_lora_seed1.safetensors"
VAE_FILE = "sd15_vae_perturbed_seed2.safetensors"
RANK = 4


def sd15_peft_shapes():
    """diffusers module names of SD1.5 → weight shape, for the PEFT file: non-attention UNet layers of three
    blocks of different widths (1x1 proj convs, GEGLU MLP, 3x3 res-block convs, time projection) and
    attention and MLP of three CLIP layers."""
    shapes = {}
    for block, dim in (("down_blocks.0.attentions.0", 320), ("mid_block.attentions.0", 1280),
                       ("up_blocks.3.attentions.2", 320)):
        shapes[f"unet.{block}.proj_in"] = shapes[f"unet.{block}.proj_out"] = (dim, dim, 1, 1)
        shapes[f"unet.{block}.transformer_blocks.0.ff.net.0.proj"] = (8 * dim, dim)
        shapes[f"unet.{block}.transformer_blocks.0.ff.net.2"] = (dim, 4 * dim)
    shapes["unet.down_blocks.0.resnets.0.conv1"] = (320, 320, 3, 3)
    shapes["unet.mid_block.resnets.0.conv2"] = (1280, 1280, 3, 3)
    shapes["unet.up_blocks.3.resnets.2.time_emb_proj"] = (320, 1280)
    for layer in (1, 6, 11):
        stem = f"text_encoder.text_model.encoder.layers.{layer}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{stem}self_attn.{proj}"] = (768, 768)
        shapes[f"{stem}mlp.fc1"], shapes[f"{stem}mlp.fc2"] = (3072, 768), (768, 3072)
    return shapes


def write_peft_lora(path, seed=1):
    """A seeded rank-4 LoRA in diffusers/PEFT's format (no alpha: scale 1), float16."""
    return write_random_lora(path, sd15_peft_shapes(), seed, PEFT, RANK)


def write_perturbed_vae(checkpoint, path, seed=2):
    """The checkpoint's VAE (``first_stage_model.*``, prefix dropped: the layout of a standalone VAE file)
    with seeded noise of 5% of each tensor's spread added, float32."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    with safe_open(str(checkpoint), framework="pt") as f:
        for key in sorted(k for k in f.keys() if k.startswith("first_stage_model.")):
            tensor = f.get_tensor(key).float()
            spread = tensor.std().item() if tensor.numel() > 1 else abs(tensor.item())
            state[key.removeprefix("first_stage_model.")] = tensor + 0.05 * spread * torch.randn(tensor.shape, generator=generator)
    save_file(state, str(path))
    return len(state)


def prepare_files(base):
    base = Path(base)
    (base / "models" / "vae").mkdir(parents=True, exist_ok=True)
    [checkpoint] = sorted((base / "models" / "checkpoints").glob("*.safetensors"))[:1]
    return {"peft_lora": {"file": PEFT_LORA, "modules": write_peft_lora(base / "models" / "loras" / PEFT_LORA)},
            "vae": {"file": VAE_FILE, "tensors": write_perturbed_vae(checkpoint, base / "models" / "vae" / VAE_FILE)}}


def node_parity_prompt(base_prompt, ckpt_name, steps):
    """sld_txt2img's loader feeding one branch per model node, each sampled with KSampler (one with
    SLDKSampler on a LoRA model) on a 64x64 latent and saved under the node's name. No prefix starts
    another (comfyui-check finds sld run's images by prefix)."""
    steps = max(int(steps or 2), 2)
    p = prepare_prompt(base_prompt, ckpt_name, steps)
    sld = {k: v for k, v in p["6"]["inputs"].items() if k.startswith("sld_")}
    for node_id in ("2", "3", "4", "6", "7", "8"):  # the branches bring their own texts, samplers and saves
        p.pop(node_id)
    p["5"]["inputs"].update(width=64, height=64, batch_size=1)
    model, clip, vae = ["1", 0], ["1", 1], ["1", 2]

    node = node_adder(p)

    def branch(tag, model, clip, vae, prefix, sampler="KSampler"):
        pos = node(f"{tag}_pos", "CLIPTextEncode", text="a portrait of a woman in a red coat, city street", clip=clip)
        neg = node(f"{tag}_neg", "CLIPTextEncode", text="blurry, low quality", clip=clip)
        inputs = dict(model=model, seed=21, steps=steps, cfg=7.0, sampler_name="euler", scheduler="normal",
                      positive=pos, negative=neg, latent_image=["5", 0], denoise=1.0)
        if sampler == "SLDKSampler":
            concept = node(f"{tag}_concept", "SLDSafetyConcept", text="hate, harassment, violence", clip=clip)
            inputs |= sld | {"safety_concept": concept, "sld_preset": "max"}
        node(f"{tag}_ks", sampler, **inputs)
        _decode_save(p, f"{tag}_ks", f"{tag}_ks", vae, prefix)

    kohya = node("lora_k", "LoraLoader", model=model, clip=clip, lora_name=LORA_NAME, strength_model=0.8,
                 strength_clip=1.3)
    branch("lk", kohya, ["lora_k", 1], vae, "node_LoraLoader_kohya_KSampler")
    branch("lks", kohya, ["lora_k", 1], vae, "node_SLDKSampler_max_after_LoraLoader_kohya", sampler="SLDKSampler")
    peft = node("lora_p", "LoraLoader", model=model, clip=clip, lora_name=PEFT_LORA, strength_model=1.0,
                strength_clip=-0.7)
    branch("lp", peft, ["lora_p", 1], vae, "node_LoraLoader_peft")
    only = node("lora_m", "LoraLoaderModelOnly", model=model, lora_name=LORA_NAME, strength_model=1.5)
    branch("lm", only, clip, vae, "node_LoraLoaderModelOnly_kohya")
    skip = node("skip", "CLIPSetLastLayer", clip=clip, stop_at_clip_layer=-2)
    branch("cs", model, skip, vae, "node_CLIPSetLastLayer_-2")
    chained = node("skip_l", "CLIPSetLastLayer", clip=["lora_k", 1], stop_at_clip_layer=-3)
    branch("csl", kohya, chained, vae, "node_CLIPSetLastLayer_-3_after_LoraLoader_kohya")
    branch("vl", model, clip, node("vae", "VAELoader", vae_name=VAE_FILE), "node_VAELoader")
    branch("plain", model, clip, vae, "node_none_checkpoint_vae")  # the reference the others must differ from
    return p
