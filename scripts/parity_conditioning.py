"""Node parity for the conditioning nodes (area "conditioning" of `comfyui-check --node-parity`):
ConditioningCombine, Concat, Average, SetArea, SetAreaPercentage, SetTimestepRange and ZeroOut, each
through KSampler, and SLDKSampler with a combined and an area positive (the safety concept global)."""
from comfyui_check_graphs import _decode_save, node_adder, prepare_prompt

FAMILY = "sd15"
SECOND_PROMPT = "a red sports car parked on a sunny beach, palm trees"
# Medium's hyper-parameters with no warm-up: Medium's own 10 warm-up steps would leave SLD inactive in a
# two-step check.
MEDIUM_AT_ONCE = dict(sld_preset="custom", sld_guidance_scale=1000.0, sld_warmup_steps=0, sld_threshold=0.01,
                      sld_momentum_scale=0.3, sld_momentum_beta=0.4)


def node_parity_prompt(base_prompt, ckpt_name, steps):
    """sld_txt2img's loader, texts and latent feeding one branch per conditioning node, each sampled,
    decoded and saved under the names of the nodes it checks, beside two plain rows (KSampler, and
    ConditioningCombine at 128x64) that show each node changes the image. Area branches sample a 128x64 image so
    an area covers part of it: SetArea the right half (feathered at its left edge), SetAreaPercentage
    a 5-cell-wide column inside (feathered both sides, an odd crop width for the UNet)."""
    steps = max(int(steps or 2), 2)
    p = prepare_prompt(base_prompt, ckpt_name, steps)
    for node_id in ("6", "7", "8"):
        p.pop(node_id)
    model, clip, pos, neg, concept, latent = ["1", 0], ["1", 1], ["2", 0], ["3", 0], ["4", 0], ["5", 0]

    node = node_adder(p)

    def ksampler(nid, prefix, positive=pos, negative=neg, latent_image=latent, step_count=steps, **sld):
        inputs = dict(model=model, seed=21, steps=step_count, cfg=7.0, sampler_name="euler", scheduler="normal",
                      positive=positive, negative=negative, latent_image=latent_image, denoise=1.0)
        if sld:
            inputs.update(safety_concept=concept, **sld)
        node(nid, "SLDKSampler" if sld else "KSampler", **inputs)
        _decode_save(p, nid, nid, ["1", 2], prefix)

    car = node("car", "CLIPTextEncode", text=SECOND_PROMPT, clip=clip)
    wide = node("wide", "EmptyLatentImage", width=128, height=64, batch_size=1)

    # Plain rows the others are told apart from (their own parity is checked too).
    ksampler("k_plain", "node_KSampler_plain")
    combined = node("comb", "ConditioningCombine", conditioning_1=pos, conditioning_2=car)
    ksampler("k_comb", "node_ConditioningCombine", positive=combined)
    ksampler("k_comb_wide", "node_ConditioningCombine_128x64", positive=combined, latent_image=wide)
    ksampler("k_cat", "node_ConditioningConcat",
             positive=node("cat", "ConditioningConcat", conditioning_to=pos, conditioning_from=car))
    ksampler("k_avg", "node_ConditioningAverage_0.3",
             positive=node("avg", "ConditioningAverage", conditioning_to=pos, conditioning_from=car,
                           conditioning_to_strength=0.3))

    right = node("area", "ConditioningSetArea", conditioning=car, width=64, height=64, x=64, y=0, strength=1.5)
    with_area = node("comb_area", "ConditioningCombine", conditioning_1=pos, conditioning_2=right)
    ksampler("k_area", "node_ConditioningSetArea_right_half_1.5", positive=with_area, latent_image=wide)
    column = node("pct", "ConditioningSetAreaPercentage", conditioning=car, width=0.3, height=1.0, x=0.5, y=0.0,
                  strength=0.8)
    ksampler("k_pct", "node_ConditioningSetAreaPercentage_column_0.8", latent_image=wide,
             positive=node("comb_pct", "ConditioningCombine", conditioning_1=pos, conditioning_2=column))

    # The second prompt for the first half of the sampling, the first prompt after it: with two normal
    # steps (σ 14.6, then 0.029 < σ(50%) = 1.6156) each applies alone at one step. With steps + 1 the
    # middle σ is σ(50%) itself, where both apply (ComfyUI's σ_end ≤ σ ≤ σ_start).
    early = node("early", "ConditioningSetTimestepRange", conditioning=car, start=0.0, end=0.5)
    late = node("late", "ConditioningSetTimestepRange", conditioning=pos, start=0.5, end=1.0)
    ranged = node("comb_range", "ConditioningCombine", conditioning_1=early, conditioning_2=late)
    ksampler("k_range", "node_ConditioningSetTimestepRange_0-0.5_0.5-1", positive=ranged)
    ksampler("k_range_edge", "node_ConditioningSetTimestepRange_boundary_step", positive=ranged, step_count=steps + 1)

    ksampler("k_zero", "node_ConditioningZeroOut_negative", negative=node("zero", "ConditioningZeroOut",
                                                                          conditioning=neg))

    ksampler("s_comb", "node_SLDKSampler_medium_warmup0_Combine", positive=combined, **MEDIUM_AT_ONCE)
    ksampler("s_area", "node_SLDKSampler_medium_warmup0_SetArea", positive=with_area, latent_image=wide,
             **MEDIUM_AT_ONCE)
    return p
