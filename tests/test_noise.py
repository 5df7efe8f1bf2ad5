"""Initial noise and noise samplers follow ComfyUI's seed rules."""
import pytest
import torch
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler as DiffusersBrownian

from comfyui_sld.sld_core.noise import (
    BrownianTreeNoiseSampler,
    brownian_noise_sampler,
    default_noise_sampler,
    prepare_noise,
)


def test_prepare_noise_is_one_cpu_randn_of_the_whole_batch():
    latent = torch.zeros(3, 4, 5, 6)
    expected = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1234))
    noise = prepare_noise(latent, 1234)
    assert noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert torch.equal(noise, expected)
    assert not torch.equal(prepare_noise(latent, 1235), expected)


def test_prepare_noise_reseeds_the_global_generator():
    prepare_noise(torch.zeros(1, 4, 2, 2), 7)
    after = torch.randn(3)
    torch.manual_seed(7)
    torch.randn(1, 4, 2, 2)
    assert torch.equal(after, torch.randn(3))


@pytest.mark.parametrize("batch_index", [[0, 1, 2], [2], [3, 0, 3], [1, 4]])
def test_prepare_noise_batch_index_picks_per_image_draws(batch_index):
    latent = torch.zeros(len(batch_index), 4, 3, 3)
    generator = torch.Generator().manual_seed(99)
    draws = [torch.randn(1, 4, 3, 3, generator=generator) for _ in range(max(batch_index) + 1)]
    expected = torch.cat([draws[i] for i in batch_index])
    assert torch.equal(prepare_noise(latent, 99, batch_index), expected)


def test_default_noise_sampler_draws_from_its_own_seeded_generator():
    x = torch.zeros(2, 4, 3, 3)
    sampler = default_noise_sampler(x, seed=11)
    generator = torch.Generator().manual_seed(11)
    state = torch.get_rng_state()
    for _ in range(3):
        assert torch.equal(sampler(1.0, 0.5), torch.randn(x.shape, generator=generator))
    assert torch.equal(state, torch.get_rng_state())  # the global generator is untouched


def test_default_noise_sampler_without_seed_uses_the_global_generator():
    x = torch.zeros(2, 3)
    torch.manual_seed(3)
    drawn = default_noise_sampler(x)(1.0, 0.5)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.randn(2, 3))


def test_brownian_noise_matches_k_diffusion_tree_in_diffusers():
    # diffusers' DPMSolverSDEScheduler carries k-diffusion's BrownianTreeNoiseSampler (CPU tree).
    x = torch.zeros(1, 4, 3, 3)
    sigmas = torch.tensor([14.6, 5.0, 1.2, 0.3, 0.03, 0.0])
    ours = brownian_noise_sampler(x, sigmas, seed=42)
    theirs = DiffusersBrownian(x, 0.03, 14.6, seed=42)
    for a, b in zip(sigmas[:-2], sigmas[1:-1]):
        torch.testing.assert_close(ours(a, b), theirs(a, b), rtol=1e-5, atol=1e-5)


def test_brownian_increments_add_up_and_have_unit_variance():
    x = torch.zeros(20000)
    sampler = BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=0)
    s0, s1, s2 = torch.tensor(8.0), torch.tensor(4.0), torch.tensor(1.0)
    whole = sampler(s0, s2) * (s0 - s2).sqrt()
    parts = sampler(s0, s1) * (s0 - s1).sqrt() + sampler(s1, s2) * (s1 - s2).sqrt()
    torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-4)  # same Brownian path
    noise = sampler(s0, s1)
    assert abs(noise.mean().item()) < 0.03 and abs(noise.std().item() - 1) < 0.03
    assert torch.equal(noise, BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=0)(s0, s1))
