"""Node parity for SLDKSamplerAdvanced (area "sld_advanced" of `comfyui-check --node-parity`).

Branches, each decoded and saved under its row name (no name is another's prefix plus "_": the
check finds `sld run`'s files by prefix). The split ones run step 0 with leftover noise, then step
1 to the end without added noise, over ``steps + 1`` steps (3 with the check's default 2):
- node_KSamplerAdvanced_split_reference and node_SLDKSamplerAdvanced_disabled_split: that split
  through ComfyUI's own KSamplerAdvanced and through ours with the preset disabled. Inside ComfyUI
  the two images must be identical: compare ComfyUI's two files of these prefixes.
- node_SLDKSamplerAdvanced_split_from_1 and node_SLDKSamplerAdvanced_whole_from_1: SLD from step 1
  on (custom values: warm-up 1, no momentum), split and in one node. With warm-up counted in the
  whole schedule the second node guides its first step too, so inside ComfyUI the split image
  equals the whole one, and both differ from the disabled one.
- node_SLDKSamplerAdvanced_split_warmup_per_node: the image a warm-up counted per node would give
  (the second node's warm-up one step longer, leaving its first step unguided): inside ComfyUI it
  differs from the whole one, so the rule is visible in the images.
- node_SLDKSamplerAdvanced_medium_whole and node_SLDKSamplerAdvanced_medium_split: the Medium preset
  over 12 steps (its warm-up is 10 steps, so SLD guides the last two), in one node and split at
  step 6 (the second node starts its momentum at zero).
"""
from comfyui_check_graphs import _decode_save, prepare_prompt

FAMILY = "sd15"
MEDIUM_STEPS = 12  # more than the Medium preset's 10 warm-up steps


def node_parity_prompt(base_prompt, ckpt_name, steps):
    steps = max(int(steps or 2), 2) + 1  # a split after step 1 leaves the second node two steps
    p = prepare_prompt(base_prompt, ckpt_name, steps)
    for node_id in ("6", "7", "8"):  # the sampler, decode and save: the branches replace them
        p.pop(node_id)
    shared = {"model": ["1", 0], "noise_seed": 11, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
              "positive": ["2", 0], "negative": ["3", 0], "add_noise": "enable", "latent_image": ["5", 0],
              "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}
    from_1 = {"safety_concept": ["4", 0], "sld_preset": "custom", "sld_guidance_scale": 5000.0,
              "sld_warmup_steps": 1, "sld_threshold": 1.0, "sld_momentum_scale": 0.0, "sld_momentum_beta": 0.0}

    def whole(nid, extra, n, prefix):
        p[nid] = {"class_type": "SLDKSamplerAdvanced", "inputs": {**shared, **extra, "steps": n}}
        _decode_save(p, f"{nid}o", nid, ["1", 2], prefix)

    def split(nid, class_type, extra, n, at, prefix):
        """Two nodes: steps 0..at with leftover noise, then at..end without added noise."""
        first = {**shared, **extra, "steps": n, "end_at_step": at, "return_with_leftover_noise": "enable"}
        rest = {**first, "add_noise": "disable", "latent_image": [f"{nid}a", 0], "start_at_step": at,
                "end_at_step": 10000, "return_with_leftover_noise": "disable"}
        p[f"{nid}a"] = {"class_type": class_type, "inputs": first}
        p[f"{nid}b"] = {"class_type": class_type, "inputs": rest}
        _decode_save(p, nid, f"{nid}b", ["1", 2], prefix)

    split("ka", "KSamplerAdvanced", {}, steps, 1, "node_KSamplerAdvanced_split_reference")
    split("sd", "SLDKSamplerAdvanced", {**from_1, "sld_preset": "disabled"}, steps, 1,
          "node_SLDKSamplerAdvanced_disabled_split")
    split("sf", "SLDKSamplerAdvanced", from_1, steps, 1, "node_SLDKSamplerAdvanced_split_from_1")
    whole("wf", from_1, steps, "node_SLDKSamplerAdvanced_whole_from_1")
    # What a warm-up counted per node would give: the second node's steps shifted by its start.
    split("sp", "SLDKSamplerAdvanced", from_1, steps, 1, "node_SLDKSamplerAdvanced_split_warmup_per_node")
    p["spb"]["inputs"]["sld_warmup_steps"] = from_1["sld_warmup_steps"] + 1

    medium = {**from_1, "sld_preset": "medium"}
    whole("mw", medium, MEDIUM_STEPS, "node_SLDKSamplerAdvanced_medium_whole")
    split("ms", "SLDKSamplerAdvanced", medium, MEDIUM_STEPS, MEDIUM_STEPS // 2,
          "node_SLDKSamplerAdvanced_medium_split")
    return p
