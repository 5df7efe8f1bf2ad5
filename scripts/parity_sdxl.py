"""Node parity for the SDXL-specific paths of the model and conditioning nodes (area "sdxl" of
`comfyui-check --node-parity`, run with an SDXL `--checkpoint`, best with `--one-model-at-a-time`).

What differs from SD1.5 and so is checked here: LoRA keys of SDXL's two text encoders (``lora_te1_`` for
CLIP-L, ``lora_te2_``/``text_encoder_2.`` for OpenCLIP bigG) and of its UNet in both kohya layouts (LDM
names ``input_blocks_4_1_...`` from kohya's SDXL trainer and diffusers names); clip skip on two encoders
that have no final norm; CLIPTextEncodeSDXL's size and crop conditioning; pooled outputs carried per
entry through ConditioningCombine and zeroed by ConditioningZeroOut; SLD on a LoRA-patched SDXL.

`prepare_files` writes both LoRA files, seeded, float16. The PEFT file adapts only layers ComfyUI 0.3.64
maps (it leaves PEFT-named UNet attention, ``attn1.to_q.lora_A``, unloaded where sld run applies it as
diffusers does; see sld_core/models/lora.py): non-attention UNet layers and both encoders' attention and MLP.
"""
from comfyui_check_graphs import KOHYA, PEFT, _decode_save, node_adder, prepare_prompt, write_random_lora

FAMILY = "sdxl"
KOHYA_LORA = "sdxl_random_kohya_lora_seed3.safetensors"
PEFT_LORA = "sdxl_random_peft_lora_seed4.safetensors"
RANK = 4
PLAIN = "node_sdxl_plain_KSampler"  # the row every other row must differ from, unless named here:
REFERENCES = {"node_SLDKSampler_sdxl_medium_warmup0_after_LoraLoader_kohya": "node_LoraLoader_sdxl_kohya"}
SECOND_PROMPT = "a red sports car parked on a sunny beach, palm trees"
# Medium's hyper-parameters with no warm-up (Medium's 10 warm-up steps would leave SLD idle in 2 steps).
MEDIUM_AT_ONCE = dict(sld_preset="custom", sld_guidance_scale=1000.0, sld_warmup_steps=0, sld_threshold=0.01,
                      sld_momentum_scale=0.3, sld_momentum_beta=0.4)


def text_layer_shapes(prefix, layers, width, sep):
    """Attention and MLP projections of some layers of a CLIP text encoder of this width, named
    PREFIX + text_model.encoder.layers.N.<module> with `sep` between the parts ("_" for kohya)."""
    shapes = {}
    for layer in layers:
        stem = sep.join(["text_model", "encoder", "layers", str(layer), ""])
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{prefix}{stem}self_attn{sep}{proj}"] = (width, width)
        shapes[f"{prefix}{stem}mlp{sep}fc1"], shapes[f"{prefix}{stem}mlp{sep}fc2"] = (4 * width, width), (width, 4 * width)
    return shapes


def kohya_shapes():
    """kohya module names → weight shape: UNet attention (self and cross, 2048-wide context) and a
    feed-forward in LDM names, attention and res-block convs in diffusers names, CLIP-L (te1) and
    bigG (te2) layers; the encoders' last layers are left out (SDXL reads the penultimate)."""
    shapes = {}
    for block, dim in (("input_blocks_4_1_transformer_blocks_0", 640), ("middle_block_1_transformer_blocks_9", 1280),
                       ("output_blocks_5_1_transformer_blocks_1", 640)):
        for proj in ("to_q", "to_k", "to_v", "to_out_0"):
            shapes[f"lora_unet_{block}_attn1_{proj}"] = (dim, dim)
        shapes[f"lora_unet_{block}_attn2_to_k"] = shapes[f"lora_unet_{block}_attn2_to_v"] = (dim, 2048)
        shapes[f"lora_unet_{block}_ff_net_0_proj"] = (8 * dim, dim)
    shapes["lora_unet_input_blocks_1_0_in_layers_2"] = (320, 320, 3, 3)
    stem = "lora_unet_down_blocks_2_attentions_1_transformer_blocks_4_"
    shapes[f"{stem}attn1_to_q"], shapes[f"{stem}attn2_to_q"] = (1280, 1280), (1280, 1280)
    shapes[f"{stem}attn2_to_k"] = (1280, 2048)
    shapes["lora_unet_up_blocks_0_resnets_2_conv1"] = (1280, 1920, 3, 3)
    shapes.update(text_layer_shapes("lora_te1_", (0, 5, 10), 768, "_"))
    shapes.update(text_layer_shapes("lora_te2_", (0, 15, 30), 1280, "_"))
    return shapes


def peft_shapes():
    """diffusers/PEFT module names → weight shape: UNet projections, feed-forwards, res-block convs and
    time projections (no attention: see the module docstring), CLIP-L and bigG layers."""
    shapes = {}
    for block, dim in (("down_blocks.1.attentions.0", 640), ("mid_block.attentions.0", 1280),
                       ("up_blocks.0.attentions.2", 1280)):
        shapes[f"unet.{block}.proj_in"] = shapes[f"unet.{block}.proj_out"] = (dim, dim)  # Linear on SDXL
        shapes[f"unet.{block}.transformer_blocks.1.ff.net.0.proj"] = (8 * dim, dim)
        shapes[f"unet.{block}.transformer_blocks.1.ff.net.2"] = (dim, 4 * dim)
    shapes["unet.down_blocks.0.resnets.1.conv2"] = (320, 320, 3, 3)
    shapes["unet.mid_block.resnets.1.conv1"] = (1280, 1280, 3, 3)
    shapes["unet.up_blocks.1.resnets.0.time_emb_proj"] = (640, 1280)
    shapes.update(text_layer_shapes("text_encoder.", (1, 6, 9), 768, "."))
    shapes.update(text_layer_shapes("text_encoder_2.", (2, 20, 29), 1280, "."))
    return shapes


def prepare_files(base):
    loras = base / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    kohya = write_random_lora(loras / KOHYA_LORA, kohya_shapes(), 3, KOHYA, RANK, alpha=2)
    peft = write_random_lora(loras / PEFT_LORA, peft_shapes(), 4, PEFT, RANK)
    return {"kohya_lora": {"file": KOHYA_LORA, "modules": kohya, "alpha": 2, "rank": RANK},
            "peft_lora": {"file": PEFT_LORA, "modules": peft, "rank": RANK}}


def node_parity_prompt(base_prompt, ckpt_name, steps):
    """sld_sdxl_txt2img's loader and texts feeding one branch per SDXL path, each sampled (KSampler,
    one SLDKSampler) on a 128x128 latent, decoded and saved under the node's name; PLAIN is the same
    sampling with nothing in between. No prefix starts another's plus "_" (comfyui-check finds sld
    run's images by prefix)."""
    steps = max(int(steps or 2), 2)
    p = prepare_prompt(base_prompt, ckpt_name, steps)
    text, negative_text, concept_text = (p[nid]["inputs"]["text"] for nid in ("2", "3", "4"))
    for node_id in ("2", "3", "4", "6", "7", "8"):  # the branches bring their own texts, samplers and saves
        p.pop(node_id)
    p["5"]["inputs"].update(width=128, height=128, batch_size=1)
    model, clip, vae = ["1", 0], ["1", 1], ["1", 2]

    node = node_adder(p)

    def encode(nid, clip, prompt=text):
        return node(nid, "CLIPTextEncode", text=prompt, clip=clip)

    def branch(tag, prefix, model=model, clip=clip, positive=None, negative=None, **sld):
        inputs = dict(model=model, seed=33, steps=steps, cfg=6.0, sampler_name="euler", scheduler="normal",
                      positive=positive or encode(f"{tag}_pos", clip),
                      negative=negative or encode(f"{tag}_neg", clip, negative_text),
                      latent_image=["5", 0], denoise=1.0)
        if sld:
            inputs.update(safety_concept=node(f"{tag}_concept", "SLDSafetyConcept", text=concept_text, clip=clip), **sld)
        node(f"{tag}_ks", "SLDKSampler" if sld else "KSampler", **inputs)
        _decode_save(p, f"{tag}_ks", f"{tag}_ks", vae, prefix)

    branch("plain", PLAIN)
    kohya = node("lora_k", "LoraLoader", model=model, clip=clip, lora_name=KOHYA_LORA, strength_model=0.9,
                 strength_clip=1.2)
    branch("lk", "node_LoraLoader_sdxl_kohya", model=kohya, clip=["lora_k", 1])
    branch("lks", "node_SLDKSampler_sdxl_medium_warmup0_after_LoraLoader_kohya", model=kohya, clip=["lora_k", 1],
           **MEDIUM_AT_ONCE)
    peft = node("lora_p", "LoraLoader", model=model, clip=clip, lora_name=PEFT_LORA, strength_model=1.0,
                strength_clip=-0.8)
    branch("lp", "node_LoraLoader_sdxl_peft", model=peft, clip=["lora_p", 1])
    for layer in (-1, -3):
        skip = node(f"skip{-layer}", "CLIPSetLastLayer", clip=clip, stop_at_clip_layer=layer)
        branch(f"cs{-layer}", f"node_CLIPSetLastLayer_sdxl_{layer}", clip=skip)
    sized = node("sdxl_enc", "CLIPTextEncodeSDXL", clip=clip, width=768, height=512, crop_w=64, crop_h=32,
                 target_width=1024, target_height=896, text_g=text, text_l=SECOND_PROMPT)
    branch("tx", "node_CLIPTextEncodeSDXL_sizes_crops", positive=sized)
    combined = node("comb", "ConditioningCombine", conditioning_1=encode("comb_a", clip),
                    conditioning_2=encode("comb_b", clip, SECOND_PROMPT))
    branch("cc", "node_ConditioningCombine_sdxl", positive=combined)
    zero = node("zero", "ConditioningZeroOut", conditioning=encode("zero_neg", clip, negative_text))
    branch("zo", "node_ConditioningZeroOut_sdxl_negative", negative=zero)
    return p
