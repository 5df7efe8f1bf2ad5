"""Guiders on the tiny model: one batched UNet call per evaluation, the skip rule, steps from σ, momentum."""
import logging

import pytest
import torch

from comfyui_sld.sld_core.guidance import PRESETS, SLDParams, sld_guidance_reference
from comfyui_sld.sld_core.guiders import CFGGuider, SLDGuider, batch_contexts
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.schedules import ksampler_sigmas

ACTIVE = SLDParams(guidance_scale=1000.0, warmup_steps=2, threshold=0.01, momentum_scale=0.3, momentum_beta=0.4)


class CountingModel(Model):
    """The real tiny model, recording the batch size of every UNet call."""

    def __init__(self, unet):
        super().__init__(unet)
        self.batches = []

    def predict_eps(self, x, sigma, context):
        self.batches.append(x.shape[0])
        return super().predict_eps(x, sigma, context)


def cond(seed, tokens=77, dim=32):
    return [[torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed)), {}]]


@pytest.fixture
def model(tiny_components):
    return CountingModel(tiny_components["unet"])


def x_and_sigmas(model, steps=6, batch=2):
    sigmas = ksampler_sigmas(model.schedule, "euler", "normal", steps)
    x = torch.randn(batch, 4, 4, 4, generator=torch.Generator().manual_seed(3)) * sigmas[0]
    return x, sigmas


def test_cfg_is_one_batched_call(model):
    x, sigmas = x_and_sigmas(model)
    guider = CFGGuider(model, cond(1), cond(2), 7.5)
    guider(x, sigmas[0] * x.new_ones(2))
    assert model.batches == [4]


def test_cfg_one_skips_the_negative_pass(model):
    x, sigmas = x_and_sigmas(model)
    CFGGuider(model, cond(1), cond(2), 1.0)(x, sigmas[0] * x.new_ones(2))
    assert model.batches == [2]


def test_sld_batches_three_conditionings_and_skips_where_it_cannot_matter(model):
    x, sigmas = x_and_sigmas(model, steps=6)
    weak_like = SLDParams(guidance_scale=200.0, warmup_steps=3, threshold=0.0, momentum_scale=0.0, momentum_beta=0.0)
    guider = SLDGuider(model, cond(1), cond(2), cond(3), 7.5, weak_like)
    guider.prepare(sigmas)
    for sigma in sigmas[:-1]:
        guider(x, sigma * x.new_ones(2))
    assert model.batches == [4, 4, 4, 6, 6, 6]  # warm-up with s_m = 0: no safety pass


def test_sld_keeps_the_safety_pass_in_warmup_when_momentum_matters(model):
    x, sigmas = x_and_sigmas(model, steps=4)
    guider = SLDGuider(model, cond(1), cond(2), cond(3), 7.5, ACTIVE)
    guider.prepare(sigmas)
    for sigma in sigmas[:-1]:
        guider(x, sigma * x.new_ones(2))
    assert model.batches == [6, 6, 6, 6]


def test_skip_is_logged(model, caplog):
    x, sigmas = x_and_sigmas(model, steps=3)
    guider = SLDGuider(model, cond(1), cond(2), cond(3), 7.5, PRESETS["weak"])
    with caplog.at_level(logging.DEBUG, logger="comfyui_sld.sld_core.guiders"):
        guider.prepare(sigmas)
        guider(x, sigmas[0] * x.new_ones(2))
    assert "never applied" in caplog.text and "safety pass skipped" in caplog.text


def test_step_index_comes_from_sigma(model):
    sigmas = ksampler_sigmas(model.schedule, "heun", "karras", 5)
    guider = SLDGuider(model, cond(1), cond(2), cond(3), 7.5, ACTIVE)
    guider.prepare(sigmas)
    for i, sigma in enumerate(sigmas[:-1]):
        assert guider.step_index(sigma.view(1)) == i
        midpoint = (sigma.log() + sigmas[i + 1].clamp(min=1e-3).log()).div(2).exp()
        assert guider.step_index(midpoint.view(1)) == i  # DPM2-style midpoint stays in its step


def test_momentum_advances_once_per_step_with_two_evaluations(model):
    """Two evaluations inside one step see the same ν; the step's last evaluation sets ν for the next."""
    x, sigmas = x_and_sigmas(model, steps=3, batch=1)
    contexts = batch_contexts([cond(2)[0][0], cond(1)[0][0], cond(3)[0][0]], 1)
    guider = SLDGuider(model, cond(1), cond(2), cond(3), 7.5, ACTIVE)
    guider.prepare(sigmas)
    momentum, got, expected = None, [], []
    for i in range(3):
        sigma = sigmas[i].view(1)
        mid = (sigmas[i] * 0.9).view(1)  # a second evaluation inside step i
        step_momentum = momentum
        for s, xi in ((sigma, x), (mid, x * 0.9)):
            got.append(guider(xi, s))
            eps = model.predict_eps(torch.cat([xi] * 3), torch.cat([s] * 3), contexts).chunk(3)
            eps_hat, momentum = sld_guidance_reference(*eps, 7.5, ACTIVE, step_momentum, i)
            expected.append(xi - eps_hat * s.view(-1, 1, 1, 1))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_prepare_resets_momentum(model):
    x, sigmas = x_and_sigmas(model, steps=3)
    guider = SLDGuider(model, cond(1), cond(2), cond(3), 7.5, ACTIVE)
    runs = []
    for _ in range(2):
        guider.prepare(sigmas)
        runs.append(torch.stack([guider(x, s * x.new_ones(2)) for s in sigmas[:-1]]))
    assert torch.equal(runs[0], runs[1])


def test_contexts_of_different_lengths_are_tiled(model):
    long_cond = cond(4, tokens=154)
    x, sigmas = x_and_sigmas(model)
    out = CFGGuider(model, long_cond, cond(2), 7.5)(x, sigmas[0] * x.new_ones(2))
    assert out.shape == x.shape
    tiled = batch_contexts([cond(2)[0][0], long_cond[0][0]], 2)
    assert tiled.shape == (4, 154, 32) and torch.equal(tiled[0, :77], tiled[0, 77:])
