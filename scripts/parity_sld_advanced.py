"""Node parity for SLDKSamplerAdvanced (area "sld_advanced" of `comfyui-check --node-parity`).

Branches, each decoded and saved under its row name (no name is another's prefix plus "_": the
check finds `sld run`'s files by prefix):
- node_KSamplerAdvanced_split_reference and node_SLDKSamplerAdvanced_disabled_split: the same split
  run (step 0 with leftover noise, then step 1 on without added noise) through ComfyUI's own
  KSamplerAdvanced and through ours with the preset disabled. Inside ComfyUI the two images must be
  identical: compare ComfyUI's two files of these prefixes.
- node_SLDKSamplerAdvanced_split_offset: the same split with SLD from step 1 on (custom values:
  warm-up 1). The first node ends inside the warm-up, so it is plain CFG; the second guides its one
  step only if it counts steps in the whole schedule (a warm-up counted per node would leave it
  unguided and the image equal to the disabled one): in ComfyUI it must differ from that image.
- node_SLDKSamplerAdvanced_medium_whole: the Medium preset over 12 steps (its warm-up is 10 steps,
  so SLD guides the last two), one node.
- node_SLDKSamplerAdvanced_medium_split: that run split at step 6 (the second node starts its
  momentum at zero).
"""
from comfyui_check_graphs import _decode_save, prepare_prompt

FAMILY = "sd15"
MEDIUM_STEPS = 12  # more than the Medium preset's 10 warm-up steps


def node_parity_prompt(base_prompt, ckpt_name, steps):
    """``steps`` (at least 2): the split branches' step count, split after step 1."""
    steps = max(int(steps or 2), 2)
    p = prepare_prompt(base_prompt, ckpt_name, steps)
    for node_id in ("6", "7", "8"):  # the sampler, decode and save: the branches replace them
        p.pop(node_id)
    shared = {"model": ["1", 0], "noise_seed": 11, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
              "positive": ["2", 0], "negative": ["3", 0]}
    offset = {"safety_concept": ["4", 0], "sld_preset": "custom", "sld_guidance_scale": 5000.0,
              "sld_warmup_steps": 1, "sld_threshold": 1.0, "sld_momentum_scale": 0.5, "sld_momentum_beta": 0.7}

    def split(nid, class_type, extra, n, at, prefix):
        """Two nodes: steps 0..at with leftover noise, then at..end without added noise."""
        first = {**shared, **extra, "steps": n, "add_noise": "enable", "latent_image": ["5", 0], "start_at_step": 0,
                 "end_at_step": at, "return_with_leftover_noise": "enable"}
        rest = {**first, "add_noise": "disable", "latent_image": [f"{nid}a", 0], "start_at_step": at,
                "end_at_step": 10000, "return_with_leftover_noise": "disable"}
        p[f"{nid}a"] = {"class_type": class_type, "inputs": first}
        p[f"{nid}b"] = {"class_type": class_type, "inputs": rest}
        _decode_save(p, nid, f"{nid}b", ["1", 2], prefix)

    split("ka", "KSamplerAdvanced", {}, steps, 1, "node_KSamplerAdvanced_split_reference")
    split("sd", "SLDKSamplerAdvanced", {**offset, "sld_preset": "disabled"}, steps, 1,
          "node_SLDKSamplerAdvanced_disabled_split")
    split("so", "SLDKSamplerAdvanced", offset, steps, 1, "node_SLDKSamplerAdvanced_split_offset")

    medium = {**offset, "sld_preset": "medium"}
    p["mw"] = {"class_type": "SLDKSamplerAdvanced",
               "inputs": {**shared, **medium, "steps": MEDIUM_STEPS, "add_noise": "enable", "latent_image": ["5", 0],
                          "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    _decode_save(p, "mwo", "mw", ["1", 2], "node_SLDKSamplerAdvanced_medium_whole")
    split("ms", "SLDKSamplerAdvanced", medium, MEDIUM_STEPS, MEDIUM_STEPS // 2,
          "node_SLDKSamplerAdvanced_medium_split")
    return p
