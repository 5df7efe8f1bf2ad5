"""A LATENT's noise_mask inside the sampler (ComfyUI's KSamplerX0Inpaint), on the tiny model: a
hand-written Euler loop with the masked blend at each model call is the reference; a mask of ones is
plain sampling, a mask of zeros gives the original latent back, a partial mask keeps the latent
outside it; every sampler entry point (ksample with and without SLD, sample_with_guider) honours it."""
import pytest
import torch

from comfyui_sld.sld_core.guiders import CFGGuider, SLDGuider
from comfyui_sld.sld_core.ksample import ksample, sample_with_guider
from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.noise import RandomNoise, prepare_noise
from comfyui_sld.sld_core.samplers import get_sampler
from comfyui_sld.sld_core.schedules import ksampler_sigmas
from comfyui_sld.sld_core.sld_params import SLDParams

SEED, STEPS, CFG = 3, 3, 5.0


@pytest.fixture(scope="module")
def parts(tiny_components):
    clip = Clip(load_clip_tokenizer(), tiny_components["text_encoder"])
    return dict(model=Model(tiny_components["unet"]), positive=clip.encode("a red square"),
                negative=clip.encode("noise"), concept=clip.encode("blue"))


@pytest.fixture(scope="module")
def start():
    return torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(21))  # unscaled LATENT samples


def sample(parts, latent, sampler="euler", sld=None):
    return ksample(parts["model"], SEED, STEPS, CFG, sampler, "normal", parts["positive"], parts["negative"], latent,
                   safety_concept=parts["concept"] if sld else None, sld_params=sld, disable_pbar=True)["samples"]


def half_mask():
    """Repaint the right half, at pixel resolution (8x the latent), one soft column at the border."""
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    mask[:, :, 31] = 0.5
    return mask


def reference_euler_inpaint(parts, start, mask, inpaint_noise=None):
    """Euler from first principles: x starts at latent + noise·√(1+σ₀²); each model call sees the kept
    region replaced by latent + σ·noise and its output's kept region replaced by the latent."""
    model = parts["model"]
    guider = CFGGuider(model, parts["positive"], parts["negative"], CFG)
    sigmas = ksampler_sigmas(model.schedule, "euler", "normal", STEPS, 1.0)
    latent = start * model.latent_scale
    noise = prepare_noise(start, SEED)
    renoise = noise if inpaint_noise is None else inpaint_noise
    m = torch.nn.functional.interpolate(mask[:, None], size=(8, 8), mode="bilinear").expand(1, 4, 8, 8)
    x = latent + noise * (1 + sigmas[0] ** 2).sqrt()
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            x_in = x * m + (latent + renoise * sigma) * (1 - m)
            denoised = guider(x_in, sigma.reshape(1)) * m + latent * (1 - m)
            x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x / model.latent_scale


def test_inpainting_equals_the_hand_written_masked_euler_loop(parts, start):
    mask = half_mask()
    got = sample(parts, {"samples": start, "noise_mask": mask})
    torch.testing.assert_close(got, reference_euler_inpaint(parts, start, mask), rtol=1e-5, atol=1e-5)


def test_ddim_renoises_the_kept_region_with_a_fresh_draw_from_seed_plus_one(parts, start):
    mask = half_mask()
    fresh = torch.randn(start.shape, generator=torch.Generator().manual_seed(SEED + 1))
    got = sample(parts, {"samples": start, "noise_mask": mask}, sampler="ddim")
    torch.testing.assert_close(got, reference_euler_inpaint(parts, start, mask, fresh), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, sample(parts, {"samples": start, "noise_mask": mask}), atol=1e-3)


@pytest.mark.parametrize("sld", [None, SLDParams(guidance_scale=2000.0, warmup_steps=0, threshold=1.0,
                                                 momentum_scale=0.5, momentum_beta=0.7)], ids=["cfg", "sld"])
def test_mask_of_ones_is_plain_sampling_and_of_zeros_the_original(parts, start, sld):
    plain = sample(parts, {"samples": start}, sld=sld)
    assert torch.equal(sample(parts, {"samples": start, "noise_mask": torch.ones(1, 64, 64)}, sld=sld), plain)
    kept = sample(parts, {"samples": start, "noise_mask": torch.zeros(1, 64, 64)}, sld=sld)
    torch.testing.assert_close(kept, start, rtol=0, atol=1e-5)


def test_partial_mask_keeps_the_latent_outside_it(parts, start):
    mask = half_mask()
    out = sample(parts, {"samples": start, "noise_mask": mask})
    torch.testing.assert_close(out[..., :3], start[..., :3], rtol=0, atol=1e-5)  # latent columns wholly kept
    assert (out[..., 4:] - start[..., 4:]).abs().mean() > 0.1  # the repainted half changed
    plain = sample(parts, {"samples": start})
    assert not torch.allclose(out[..., 4:], plain[..., 4:], atol=1e-3)  # the kept half steers the rest


def test_sample_with_guider_honours_the_mask_and_keeps_it_in_both_outputs(parts, start):
    model = parts["model"]
    guider = SLDGuider(model, parts["positive"], parts["negative"], parts["concept"], CFG,
                       SLDParams(guidance_scale=2000.0, warmup_steps=0, threshold=1.0, momentum_scale=0.0,
                                 momentum_beta=0.0))
    mask = torch.zeros(1, 64, 64)
    sigmas = ksampler_sigmas(model.schedule, "euler", "normal", STEPS, 1.0)
    out, denoised = sample_with_guider(guider, get_sampler("euler"), sigmas, {"samples": start, "noise_mask": mask},
                                       RandomNoise(SEED), SEED, disable_pbar=True)
    torch.testing.assert_close(out["samples"], start, rtol=0, atol=1e-5)
    torch.testing.assert_close(denoised["samples"], start, rtol=0, atol=1e-5)
    assert out["noise_mask"] is mask and denoised["noise_mask"] is mask
