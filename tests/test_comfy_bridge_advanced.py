"""SLDKSamplerAdvanced on ComfyUI's own MODEL: the bridge's `ksample_native` with KSamplerAdvanced's
arguments (ComfyUI stand-in, tests/comfy_standin).

Expected values by hand, as in test_comfy_bridge.py: the seed's noise scaled as ComfyUI scales it,
Euler steps over the UNet's own ε combined by the paper's SLD step at the step's index in the whole
schedule, momentum from zero in each node; for SLD off, ComfyUI's CFGGuider over the schedule cut as
ComfyUI's KSampler cuts it.
"""
import pytest
import torch
from test_comfy_bridge import (CFG, CONDS, NEGATIVE, POSITIVE, SAFETY, cfg_guider, close, comfy, model,  # noqa: F401
                               patcher, reference_sld)

from comfyui_sld.nodes.errors import NodeInputError
from comfyui_sld.sld_core.guidance import SLDParams

STEPS, SPLIT, SEED = 4, 1, 7
PARAMS = SLDParams(guidance_scale=1000.0, warmup_steps=1, threshold=0.01, momentum_scale=0.5, momentum_beta=0.7)


def node(patcher, latent, add_noise, start, end, leftover, preset="custom", params=PARAMS):
    from comfyui_sld.nodes.sampling import SLDKSamplerAdvanced

    sld = (params.guidance_scale, params.warmup_steps, params.threshold, params.momentum_scale, params.momentum_beta)
    (out,) = SLDKSamplerAdvanced().sample(patcher, add_noise, SEED, STEPS, CFG, "euler", "karras", POSITIVE, NEGATIVE,
                                          latent, start, end, leftover, SAFETY, preset, *sld)
    return out


def full_sigmas(comfy, patcher):
    return comfy.samplers.KSampler(patcher, STEPS, torch.device("cpu"), "euler", "karras", 1.0).sigmas


def by_hand(comfy, patcher, model, local_warmup=False):
    """Two nodes split at SPLIT: ν back to zero at the split; `local_warmup`: the wrong rule."""
    sigmas = full_sigmas(comfy, patcher)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(SEED)) * (1 + sigmas[0] ** 2).sqrt()
    momentum = None
    for i in range(STEPS):
        if i == SPLIT:
            momentum = None
        step = i - SPLIT if local_warmup and i >= SPLIT else i
        denoised, momentum = reference_sld(model, x, sigmas[i], CONDS, CFG, PARAMS, momentum, step)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x / patcher.model.latent_format.scale_factor


def test_a_split_sld_run_on_a_comfyui_model_follows_the_split_rule(comfy, patcher, model):
    first = node(patcher, {"samples": torch.zeros(1, 4, 4, 4)}, "enable", 0, SPLIT, "enable")
    second = node(patcher, first, "disable", SPLIT, 10000, "disable")
    assert close([second["samples"]], [by_hand(comfy, patcher, model)])
    assert not close([second["samples"]], [by_hand(comfy, patcher, model, local_warmup=True)])


def test_disabled_is_comfyuis_cfg_guider_over_the_cut_schedule_bitwise(comfy, patcher):
    latent = {"samples": torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))}
    out = node(patcher, latent, "disable", 1, 3, "disable", preset="disabled")
    sigmas = full_sigmas(comfy, patcher)[:4].clone()
    sigmas[-1] = 0  # no leftover noise: the cut schedule ends at σ = 0
    expected = cfg_guider(comfy, patcher).sample(torch.zeros(1, 4, 4, 4), latent["samples"],
                                                 comfy.samplers.sampler_object("euler"), sigmas[1:], seed=SEED)
    assert torch.equal(out["samples"], expected)


def test_an_empty_range_is_an_error_in_the_node_and_the_latent_in_ksample_native(comfy, patcher):
    latent = {"samples": torch.randn(1, 4, 4, 4), "extra": 1}
    with pytest.raises(NodeInputError, match=f"start_at_step {STEPS} is not below steps {STEPS}"):
        node(patcher, latent, "enable", STEPS, 10000, "disable")
    out = comfy.bridge.ksample_native(patcher, SEED, STEPS, CFG, "euler", "karras", POSITIVE, NEGATIVE, latent, 1.0,
                                      SAFETY, PARAMS, start_step=3, last_step=3)
    assert out["samples"] is latent["samples"] and out["extra"] == 1
