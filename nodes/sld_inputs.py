"""The SLD inputs shared by `SLDKSampler` and the ComfyUI-only `SLDGuider`: the safety concept, the
preset and the five hyper-parameters, and their conversion to `SLDParams`.

A module of its own so that both node modules import it at the top, and neither imports the other
(`comfy_bridge` can only be imported inside ComfyUI; `sampling` reaches it lazily, there only)."""
from ..sld_core.sld_params import PRESET_NAMES, PRESETS, resolve_params

_MEDIUM = PRESETS["medium"]


def sld_inputs():
    """The safety concept, the preset and the five SLD hyper-parameters (defaults: the Medium preset)."""
    custom = "Used only when sld_preset is custom."
    return {
        "safety_concept": ("CONDITIONING", {"tooltip": "The encoded safety concept (SLD Safety Concept node)."}),
        "sld_preset": (list(PRESET_NAMES), {"default": "medium",
                       "tooltip": "SLD strength: the paper's presets (weak, medium, strong, max), disabled (plain KSampler), or custom."}),
        "sld_guidance_scale": ("FLOAT", {"default": _MEDIUM.guidance_scale, "min": 0.0, "max": 100000.0, "step": 1.0,
                               "tooltip": f"s_S: scale of the safety guidance; SLD is off at ≤ 1. {custom}"}),
        "sld_warmup_steps": ("INT", {"default": _MEDIUM.warmup_steps, "min": 0, "max": 10000,
                             "tooltip": f"δ: steps before safety guidance is applied. {custom}"}),
        "sld_threshold": ("FLOAT", {"default": _MEDIUM.threshold, "min": 0.0, "max": 10.0, "step": 0.001,
                          "tooltip": f"λ: only latent elements closer to the safety concept than this are guided. {custom}"}),
        "sld_momentum_scale": ("FLOAT", {"default": _MEDIUM.momentum_scale, "min": 0.0, "max": 100.0, "step": 0.01,
                               "tooltip": f"s_m: weight of the safety guidance momentum. {custom}"}),
        "sld_momentum_beta": ("FLOAT", {"default": _MEDIUM.momentum_beta, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": f"β_m: how much momentum carries over between steps. {custom}"}),
    }


def params_from_inputs(sld_preset, guidance_scale, warmup_steps, threshold, momentum_scale, momentum_beta):
    """SLDParams for the node inputs: the preset's, or the five values when the preset is custom."""
    custom = {}
    if sld_preset == "custom":
        custom = dict(guidance_scale=guidance_scale, warmup_steps=warmup_steps, threshold=threshold,
                      momentum_scale=momentum_scale, momentum_beta=momentum_beta)
    return resolve_params(sld_preset, **custom)
