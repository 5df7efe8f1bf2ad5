"""Guiders on the tiny model: one batched UNet call per evaluation, the skip rule, steps from σ, momentum."""
import logging

import pytest
import torch

from comfyui_sld.sld_core.guidance import PRESETS, SLDParams, sld_guidance
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
            eps_hat, momentum = sld_guidance(*eps, 7.5, ACTIVE, step_momentum, i)
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


def test_tiling_a_context_leaves_the_unet_output_unchanged(model):
    """Repeating every key/value token k times multiplies each softmax weight's numerator and
    denominator by k alike, so cross-attention (and with it the UNet) computes the same ε."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = torch.tensor([3.0, 0.7])
    context = cond(6)[0][0].expand(2, -1, -1)
    eps = model.predict_eps(x, sigma, context)
    for k in (2, 3):
        tiled = model.predict_eps(x, sigma, context.repeat(1, k, 1))
        torch.testing.assert_close(tiled, eps, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(model.predict_eps(x, sigma, cond(7)[0][0].expand(2, -1, -1)), eps)  # not blind


def test_contexts_of_different_lengths_are_tiled_to_a_common_length(model):
    """A 154-token positive and 231-token safety concept beside a 77-token negative: one batched call
    over contexts tiled to 462 tokens gives what each conditioning gives on its own, untiled."""
    x, sigmas = x_and_sigmas(model)
    sigma = sigmas[1] * x.new_ones(2)
    negative, positive, safety = cond(2), cond(4, tokens=154), cond(5, tokens=231)
    tiled = batch_contexts([negative[0][0], positive[0][0], safety[0][0]], 2)
    assert tiled.shape == (6, 462, 32)
    torch.testing.assert_close(tiled[2], positive[0][0][0].repeat(3, 1), rtol=0, atol=0)

    def alone(conditioning):
        return model.denoise(x, sigma, conditioning[0][0].expand(2, -1, -1))

    expected = alone(negative) + (alone(positive) - alone(negative)) * 7.5
    torch.testing.assert_close(CFGGuider(model, positive, negative, 7.5)(x, sigma), expected, rtol=1e-5, atol=1e-5)

    no_momentum = SLDParams(guidance_scale=1000.0, warmup_steps=0, threshold=0.01, momentum_scale=0.0, momentum_beta=0.0)
    guider = SLDGuider(model, positive, negative, safety, 7.5, no_momentum)
    guider.prepare(sigmas)
    eps = [(x - alone(c)) / sigma.view(-1, 1, 1, 1) for c in (negative, positive, safety)]
    eps_hat, _ = sld_guidance(*eps, 7.5, no_momentum, None, 1)
    torch.testing.assert_close(guider(x, sigma), x - eps_hat * sigma.view(-1, 1, 1, 1), rtol=1e-4, atol=1e-4)
    assert model.batches[-1] == 6  # one batched call over the three tiled contexts
