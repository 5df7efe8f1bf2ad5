"""SLDKSamplerAdvanced (headless): KSamplerAdvanced with SLD, and SLD across a split run.

The split-run rule under test: warm-up counts steps of the whole `steps` schedule, momentum starts at
zero in each node. The reference is written here by hand: an Euler loop over the schedule whose every
step evaluates the UNet's own ε for the three conditionings and combines them with the paper's step
(`guidance.sld_guidance`) at the step's index in the whole schedule, ν set back to zero where a node
starts. A second, wrong rule (warm-up counted from each node's first step) shows the checks can fail.
"""
import pytest
import torch

from comfyui_sld.nodes.custom_sampling import KSamplerAdvanced
from comfyui_sld.nodes.errors import NodeInputError
from comfyui_sld.nodes.sampling import SLDKSampler, SLDKSamplerAdvanced
from comfyui_sld.sld_core.guidance import SLDParams, sld_guidance
from comfyui_sld.sld_core.schedules import ksampler_sigmas

SEED, STEPS, SPLIT, CFG = 5, 6, 3, 6.0


@pytest.fixture(scope="module")
def parts(tiny_sampling_parts):
    return tiny_sampling_parts


def empty_latent():
    return {"samples": torch.zeros(1, 4, 8, 8)}


def custom(params):
    return ("custom", params.guidance_scale, params.warmup_steps, params.threshold, params.momentum_scale,
            params.momentum_beta)


def sld_advanced(parts, latent, add_noise, start, end, leftover, sld=("max", 0, 0, 0, 0, 0), steps=STEPS):
    (out,) = SLDKSamplerAdvanced().sample(parts["model"], add_noise, SEED, steps, CFG, "euler", "normal",
                                          parts["positive"], parts["negative"], latent, start, end, leftover,
                                          parts["safety"], *sld)
    return out


def split_run(parts, sld, split=SPLIT):
    first = sld_advanced(parts, empty_latent(), "enable", 0, split, "enable", sld)
    return sld_advanced(parts, first, "disable", split, 10000, "disable", sld)["samples"]


def reference(parts, params, node_starts=(0,), local_warmup=False):
    """The latent of a run split into nodes at `node_starts`, by hand (see the module docstring).
    `local_warmup`: the wrong rule, each node counting its steps from 0."""
    model = parts["model"]
    sigmas = ksampler_sigmas(model.schedule, "euler", "normal", STEPS)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(SEED)) * (1 + sigmas[0] ** 2).sqrt()
    contexts = [parts[name][0][0] for name in ("negative", "positive", "safety")]
    momentum, start = None, 0
    for i in range(STEPS):
        if i in node_starts:
            momentum, start = None, i
        sigma = sigmas[i] * torch.ones(1)
        eps = [model.predict_eps(x, sigma, context) for context in contexts]
        guided, momentum = sld_guidance(*eps, CFG, params, momentum, i - start if local_warmup else i)
        x = x + guided * (sigmas[i + 1] - sigmas[i])  # Euler: d = (x − x̂₀)/σ = ε̂
    return model.process_latent_out(x)


def close(actual, expected):
    """Equal up to float rounding (one batched UNet call against three, the LATENT scale round trip
    at the split); a wrong step index or momentum is off by far more."""
    return float((actual - expected).abs().max()) <= 1e-4 * float(expected.abs().max())


def test_the_whole_range_is_sld_ksampler_and_disabled_is_ksampler_advanced(parts):
    sld = custom(SLDParams(1000.0, 2, 0.01, 0.5, 0.7))
    whole = sld_advanced(parts, empty_latent(), "enable", 0, 10000, "disable", sld)["samples"]
    (expected,) = SLDKSampler().sample(parts["model"], SEED, STEPS, CFG, "euler", "normal", parts["positive"],
                                       parts["negative"], empty_latent(), 1.0, parts["safety"], *sld)
    assert torch.equal(whole, expected["samples"])

    part = sld_advanced(parts, empty_latent(), "enable", 1, 4, "enable", ("disabled", *sld[1:]))["samples"]
    (plain,) = KSamplerAdvanced().sample(parts["model"], "enable", SEED, STEPS, CFG, "euler", "normal",
                                         parts["positive"], parts["negative"], empty_latent(), 1, 4, "enable")
    assert torch.equal(part, plain["samples"])


@pytest.mark.parametrize("warmup", [2, SPLIT, 4])
def test_without_momentum_a_split_run_is_the_whole_run(parts, warmup):
    """Warm-up ends before, at and after the split: the second node guides exactly the steps the
    whole run guides."""
    params = SLDParams(1000.0, warmup, 0.01, 0.0, 0.0)
    split = split_run(parts, custom(params))
    whole = sld_advanced(parts, empty_latent(), "enable", 0, 10000, "disable", custom(params))["samples"]
    assert close(split, whole)
    assert close(split, reference(parts, params))
    assert not close(split, reference(parts, params, (0, SPLIT), local_warmup=True))


def test_with_momentum_the_second_node_starts_from_zero_momentum(parts):
    params = SLDParams(1000.0, 1, 0.01, 0.5, 0.7)
    split = split_run(parts, custom(params))
    assert close(split, reference(parts, params, (0, SPLIT)))
    assert not close(split, reference(parts, params))  # the momentum not carried over is a real difference
    assert not close(split, reference(parts, params, (0, SPLIT), local_warmup=True))


def test_a_node_that_ends_within_the_warmup_is_plain_cfg_bitwise(parts):
    """Its safety term is never applied and its momentum goes nowhere: the safety pass is skipped,
    whatever the momentum scale, so the node is KSamplerAdvanced's arithmetic exactly."""
    params = SLDParams(1000.0, SPLIT, 0.01, 0.5, 0.7)
    first = sld_advanced(parts, empty_latent(), "enable", 0, SPLIT, "enable", custom(params))
    (plain,) = KSamplerAdvanced().sample(parts["model"], "enable", SEED, STEPS, CFG, "euler", "normal",
                                         parts["positive"], parts["negative"], empty_latent(), 0, SPLIT, "enable")
    assert torch.equal(first["samples"], plain["samples"])


@pytest.mark.parametrize("start, end, limit", [(STEPS, 10000, f"steps {STEPS}"), (STEPS + 3, 10000, f"steps {STEPS}"),
                                               (2, 2, "end_at_step 2"), (4, 1, "end_at_step 1")])
def test_a_range_with_no_step_is_an_error_naming_start_at_step(parts, start, end, limit):
    with pytest.raises(NodeInputError, match=f"start_at_step {start} is not below {limit}") as error:
        sld_advanced(parts, empty_latent(), "enable", start, end, "disable")
    assert error.value.input_name == "start_at_step"


def test_comfyuis_ksampler_advanced_passes_an_empty_range_through_and_says_so(parts, caplog):
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    with caplog.at_level("INFO", logger="comfyui_sld.nodes.custom_sampling"):
        (out,) = KSamplerAdvanced().sample(parts["model"], "enable", SEED, STEPS, CFG, "euler", "normal",
                                           parts["positive"], parts["negative"], latent, 4, 4, "disable")
    assert out["samples"] is latent["samples"]
    assert "start_at_step 4 is not below end_at_step 4" in caplog.text
