"""Samplers against diffusers' schedulers and against closed-form properties, on an analytic denoiser.

The denoiser is the exact posterior mean for Gaussian data x₀ ~ N(μ, s²) plus a small fixed nonlinear
term (so that multistep/second-order corrections matter and are not exact by linearity):
D(x, σ) = (s²·x + σ²·μ)/(σ² + s²) + 0.05·tanh(x)·σ/(1+σ).
For diffusers it becomes an ε model: a σ-space scheduler hands it x/√(1+σ²), a VP scheduler x_vp;
both are the VE latent divided by √(1+σ²), so ε = (x − D(x, σ))/σ with x = input·√(1+σ²).

Pairs that have an exact diffusers counterpart (given the same σ sequence):
euler↔EulerDiscrete, ddim↔DDIM (η=0, set_alpha_to_one), heun↔HeunDiscrete, dpm_2↔KDPM2Discrete,
lms↔LMSDiscrete (all steps but the last: ComfyUI's last step to σ=0 returns the denoised estimate,
diffusers integrates the multistep polynomial to 0), dpmpp_2m↔DPMSolverMultistep(dpmsolver++, 2,
final_sigmas_type="zero"), dpmpp_2m_sde↔DPMSolverMultistep(sde-dpmsolver++) with the same injected
noise, euler_ancestral↔EulerAncestralDiscrete with the same generator stream, uni_pc/uni_pc_bh2↔
UniPCMultistep(bh1/bh2, order 3) on a schedule ending at σ_min (ComfyUI's own end point σ = 0.001 is
tested separately: diffusers cannot end there).
Without an exact counterpart in diffusers: dpm_2_ancestral (KDPM2Ancestral indexes σ_down differently),
dpmpp_2s_ancestral, dpmpp_sde (k-diffusion's port in DPMSolverSDEScheduler draws its own tree);
these are checked through closed-form properties (η = 0 reduces to the deterministic solver; on
Gaussian data the SDE samplers reproduce the data mean and variance).
"""
import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.model_sampling import DiscreteSchedule
from comfyui_sld.sld_core.noise import default_noise_sampler
from comfyui_sld.sld_core.samplers import SAMPLER_NAMES, SAMPLERS, get_sampler
from comfyui_sld.sld_core.schedules import calculate_sigmas, ksampler_sigmas

SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SHAPE = (2, 4, 4, 4)
MU = torch.linspace(-1.0, 1.0, math.prod(SHAPE)).reshape(SHAPE)
S2 = 0.25  # data variance s²


def denoiser(x, sigma, **extra_args):
    sigma = sigma.view(-1, *([1] * (x.ndim - 1))) if torch.is_tensor(sigma) and sigma.ndim else sigma
    return (S2 * x + sigma**2 * MU) / (sigma**2 + S2) + 0.05 * torch.tanh(x) * sigma / (1 + sigma)


def eps_model(model_input, sigma):
    x = model_input * (sigma**2 + 1) ** 0.5
    return (x - denoiser(x, sigma)) / sigma


def start_latent(seed=0):
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def run_sigma_space(scheduler, steps, sigma_at, stop_before_last=False, generator=None):
    """diffusers loop for a scheduler that works on the σ-space latent. Returns (σ sequence, x_start, x_end)."""
    scheduler.set_timesteps(steps)
    sigmas = torch.unique_consecutive(scheduler.sigmas.float())
    x = start_latent() * scheduler.init_noise_sigma
    x_start = x.clone()
    timesteps = scheduler.timesteps[:-1] if stop_before_last else scheduler.timesteps
    for i, t in enumerate(timesteps):
        model_input = scheduler.scale_model_input(x, t)
        kwargs = {"generator": generator} if generator is not None else {}
        x = scheduler.step(eps_model(model_input, sigma_at(scheduler, i)), t, x, **kwargs).prev_sample
    return sigmas, x_start, x


def assert_close(actual, expected, atol=2e-5, rtol=1e-5):
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def by_index(scheduler, i):
    return scheduler.sigmas[i]


def test_euler_matches_diffusers_euler():
    sigmas, x, expected = run_sigma_space(EulerDiscreteScheduler(**SD1), 10, by_index)
    assert_close(SAMPLERS["euler"](denoiser, x, sigmas, disable=True), expected)


def test_heun_matches_diffusers_heun():
    sigmas, x, expected = run_sigma_space(HeunDiscreteScheduler(**SD1), 8, by_index)
    assert len(sigmas) == 9
    assert_close(SAMPLERS["heun"](denoiser, x, sigmas, disable=True), expected)


def test_dpm_2_matches_diffusers_kdpm2():
    def kdpm2_sigma(scheduler, i):  # odd evaluations are at the geometric midpoints
        return scheduler.sigmas_interpol[i] if i % 2 else scheduler.sigmas[i]

    sigmas, x, expected = run_sigma_space(KDPM2DiscreteScheduler(**SD1), 8, kdpm2_sigma)
    assert_close(SAMPLERS["dpm_2"](denoiser, x, sigmas, disable=True), expected)


def test_lms_matches_diffusers_lms_until_the_final_denoise():
    steps = 12
    sigmas, x, expected = run_sigma_space(LMSDiscreteScheduler(**SD1), steps, by_index, stop_before_last=True)
    seen = {}
    result = SAMPLERS["lms"](denoiser, x, sigmas, disable=True, callback=lambda info: seen.update({info["i"]: info}))
    assert_close(seen[steps - 1]["x"], expected)
    assert torch.equal(result, seen[steps - 1]["denoised"])


def test_euler_ancestral_matches_diffusers_with_the_same_noise_stream():
    generator = torch.Generator().manual_seed(123)
    sigmas, x, expected = run_sigma_space(EulerAncestralDiscreteScheduler(**SD1), 10, by_index, generator=generator)
    # diffusers draws after every step, ComfyUI on all but the last (where σ_up = 0): same stream.
    ours = default_noise_sampler(x, seed=123)
    result = SAMPLERS["euler_ancestral"](denoiser, x, sigmas, disable=True, noise_sampler=ours)
    assert_close(result, expected)
    assert_close(SAMPLERS["euler_ancestral"](denoiser, x, sigmas, {"seed": 123}, disable=True), expected)


def vp_sigma(scheduler, t):
    abar = scheduler.alphas_cumprod[t].double()
    return ((1 - abar) / abar).sqrt().float()


def run_vp(scheduler, steps, sigma_at, step_kwargs=lambda i: {}):
    """diffusers loop for a VP-space scheduler; returns (σ sequence, σ-space x_start, σ-space x_end)."""
    scheduler.set_timesteps(steps)
    x_vp = start_latent()
    sigma_0 = sigma_at(scheduler, 0)
    x_start = x_vp * (1 + sigma_0**2) ** 0.5
    for i, t in enumerate(scheduler.timesteps):
        x_vp = scheduler.step(eps_model(x_vp, sigma_at(scheduler, i)), t, x_vp, **step_kwargs(i)).prev_sample
    return x_start, x_vp


def test_ddim_matches_diffusers_ddim():
    scheduler = DDIMScheduler(**SD1, steps_offset=1, set_alpha_to_one=True, clip_sample=False)
    x, expected = run_vp(scheduler, 10, lambda s, i: vp_sigma(s, s.timesteps[i]))
    sigmas = torch.cat([torch.stack([vp_sigma(scheduler, t) for t in scheduler.timesteps]), torch.zeros(1)])
    torch.testing.assert_close(sigmas, calculate_sigmas(DiscreteSchedule(), "ddim_uniform", 10), rtol=2e-5, atol=0)
    assert_close(SAMPLERS["ddim"](denoiser, x, sigmas, disable=True), expected)


def dpmsolver(**config):
    return DPMSolverMultistepScheduler(**SD1, solver_order=2, solver_type="midpoint", lower_order_final=True,
                                       final_sigmas_type="zero", **config)


def test_dpmpp_2m_matches_diffusers_dpmsolver_pp_2m():
    scheduler = dpmsolver(algorithm_type="dpmsolver++")
    x, expected = run_vp(scheduler, 10, by_index)
    assert_close(SAMPLERS["dpmpp_2m"](denoiser, x, scheduler.sigmas, disable=True), expected)


def test_dpmpp_2m_sde_matches_diffusers_sde_dpmsolver_pp_with_the_same_noise():
    steps = 10
    noises = [torch.randn(SHAPE, generator=torch.Generator().manual_seed(1000 + i)) for i in range(steps)]
    scheduler = dpmsolver(algorithm_type="sde-dpmsolver++")
    x, expected = run_vp(scheduler, steps, by_index, lambda i: {"variance_noise": noises[i]})
    draws = iter(noises)
    result = SAMPLERS["dpmpp_2m_sde"](denoiser, x, scheduler.sigmas, disable=True, noise_sampler=lambda s, sn: next(draws))
    assert_close(result, expected)


@pytest.mark.parametrize("name,variant", [("uni_pc", "bh1"), ("uni_pc_bh2", "bh2")])
def test_uni_pc_matches_diffusers_unipc_order_3(name, variant):
    scheduler = UniPCMultistepScheduler(**SD1, solver_order=3, solver_type=variant, predict_x0=True,
                                        lower_order_final=True, final_sigmas_type="sigma_min")
    x, x_vp_end = run_vp(scheduler, 10, by_index)
    sigmas = scheduler.sigmas.float()
    expected = x_vp_end * (1 + sigmas[-1] ** 2) ** 0.5
    assert_close(SAMPLERS[name](denoiser, x, sigmas, disable=True), expected)


def test_uni_pc_ends_at_sigma_one_thousandth_instead_of_zero():
    sigmas = ksampler_sigmas(DiscreteSchedule(), "uni_pc", "karras", 8)
    x = start_latent() * sigmas[0]
    explicit = sigmas.clone()
    explicit[-1] = 0.001
    result = SAMPLERS["uni_pc"](denoiser, x, sigmas, disable=True)
    assert sigmas[-1] == 0  # the caller's σ are not modified
    assert torch.equal(result, SAMPLERS["uni_pc"](denoiser, x, explicit, disable=True))


# ---- closed-form properties -------------------------------------------------------------------------

def gaussian_denoiser(x, sigma, **extra_args):
    sigma = sigma.view(-1, *([1] * (x.ndim - 1)))
    return (S2 * x + sigma**2 * MU) / (sigma**2 + S2)


def exact_ode_end(x, sigma_from, sigma_to):
    """Probability-flow ODE solution for Gaussian data: x − μ scales with √(σ² + s²)."""
    return MU + (x - MU) * math.sqrt((sigma_to**2 + S2) / (sigma_from**2 + S2))


# UniPC runs order 3 but ComfyUI's lower-order final steps (orders 2 and 1) cap the global order near 2.
@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2), ("dpm_2", 2), ("lms", 3), ("dpmpp_2m", 2),
                                        ("uni_pc", 2), ("uni_pc_bh2", 2)])
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name, order):
    # Stop at σ_end > 0 so that the last step is a real solver step; compare with the exact flow.
    sigma_max, sigma_end = 14.6146, 0.1
    x = start_latent() * sigma_max
    errors = []
    for steps in (32, 64):  # multistep methods are pre-asymptotic below ~30 steps here
        sigmas = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_end), steps + 1))
        result = SAMPLERS[name](gaussian_denoiser, x, sigmas, disable=True)
        errors.append((result - exact_ode_end(x, sigma_max, sigma_end)).abs().max().item())
    observed = math.log2(errors[0] / errors[1])
    assert observed > order - 0.5, (errors, observed)


def test_ancestral_samplers_without_noise_are_their_deterministic_solver():
    sigmas = calculate_sigmas(DiscreteSchedule(), "karras", 9)
    x = start_latent() * sigmas[0]
    no_noise = lambda s, sn: torch.randn(SHAPE)  # drawn (as ComfyUI does) but scaled by σ_up = 0
    a = SAMPLERS["dpm_2_ancestral"](denoiser, x, sigmas, disable=True, eta=0.0, noise_sampler=no_noise)
    assert_close(a, SAMPLERS["dpm_2"](denoiser, x, sigmas, disable=True), atol=1e-6, rtol=1e-6)
    b = SAMPLERS["euler_ancestral"](denoiser, x, sigmas, disable=True, eta=0.0, noise_sampler=no_noise)
    assert_close(b, SAMPLERS["euler"](denoiser, x, sigmas, disable=True), atol=1e-6, rtol=1e-6)
    c = SAMPLERS["dpmpp_sde"](denoiser, x, sigmas, disable=True, eta=0.0, noise_sampler=no_noise)
    d = SAMPLERS["dpmpp_2s_ancestral"](denoiser, x, sigmas, disable=True, eta=0.0, noise_sampler=no_noise)
    assert_close(c, d, atol=1e-5, rtol=1e-5)  # both are DPM-Solver++(2S) with r = ½ when η = 0


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde",
                                  "dpmpp_2m_sde", "dpmpp_2m_sde_heun"])
def test_stochastic_samplers_reproduce_gaussian_data_statistics(name):
    # For x₀ ~ N(m, s²) the exact denoiser turns pure noise into samples of N(m, s²); check mean and std.
    # 100 steps: Euler-ancestral is first order and still 16 % narrow at 20 steps.
    n, m, s = 4000, 0.7, 0.5

    def scalar_denoiser(x, sigma, **extra_args):
        sigma = sigma.view(-1, 1)
        return (s**2 * x + sigma**2 * m) / (sigma**2 + s**2)

    sigmas = calculate_sigmas(DiscreteSchedule(), "karras", 100)
    x = torch.randn(n, 1, generator=torch.Generator().manual_seed(1)) * (sigmas[0] ** 2 + s**2) ** 0.5 + m
    out = SAMPLERS[name](scalar_denoiser, x, sigmas, {"seed": 3}, disable=True)
    assert abs(out.mean().item() - m) < 0.04
    assert abs(out.std().item() - s) < 0.04


# ---- RNG contract -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2", "lms", "dpmpp_2m", "ddim", "uni_pc"])
def test_deterministic_samplers_consume_no_random_numbers(name):
    sigmas = calculate_sigmas(DiscreteSchedule(), "normal", 6)
    x = start_latent() * sigmas[0]
    state = torch.get_rng_state()
    SAMPLERS[name](denoiser, x, sigmas, {"seed": 1}, disable=True)
    assert torch.equal(state, torch.get_rng_state())


def test_euler_churn_draws_from_the_global_generator_only_when_gamma_positive():
    sigmas = calculate_sigmas(DiscreteSchedule(), "normal", 6)
    x = start_latent() * sigmas[0]
    state = torch.get_rng_state()
    SAMPLERS["euler"](denoiser, x, sigmas, disable=True, s_churn=1.0, s_tmin=100.0)  # γ = 0 everywhere
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(5)
    a = SAMPLERS["euler"](denoiser, x, sigmas, disable=True, s_churn=1.0)
    assert not torch.equal(state, torch.get_rng_state())
    torch.manual_seed(5)
    assert torch.equal(a, SAMPLERS["euler"](denoiser, x, sigmas, disable=True, s_churn=1.0))


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde",
                                  "dpmpp_2m_sde", "dpmpp_2m_sde_gpu"])
def test_stochastic_samplers_are_reproducible_from_the_seed(name):
    sigmas = calculate_sigmas(DiscreteSchedule(), "karras", 5)
    x = start_latent() * sigmas[0]
    a = SAMPLERS[name](denoiser, x, sigmas, {"seed": 7}, disable=True)
    state = torch.get_rng_state()
    b = SAMPLERS[name](denoiser, x, sigmas, {"seed": 7}, disable=True)
    assert torch.equal(state, torch.get_rng_state())  # a seeded run leaves the global generator alone
    assert torch.equal(a, b)
    assert not torch.allclose(a, SAMPLERS[name](denoiser, x, sigmas, {"seed": 8}, disable=True))


def test_extra_args_reach_the_model_and_callback_sees_every_step():
    sigmas = calculate_sigmas(DiscreteSchedule(), "karras", 4)
    x = start_latent() * sigmas[0]
    for name in SAMPLER_NAMES:
        calls, steps = [], []

        def model(x, sigma, seed=None, context=None):
            calls.append((seed, context))
            return denoiser(x, sigma)

        SAMPLERS[name](model, x, sigmas, {"seed": 9, "context": "c"}, callback=steps.append, disable=True)
        assert calls and all(c == (9, "c") for c in calls), name
        assert [s["i"] for s in steps] == list(range(len(sigmas) - 1)), name
        assert set(steps[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}, name


def test_unknown_sampler_names_list_the_valid_ones():
    with pytest.raises(InvalidInputError, match="euler_ancestral"):
        get_sampler("k_euler")
    assert get_sampler("ddim") is get_sampler("euler")
    required = {"euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde",
                "dpmpp_sde", "ddim", "uni_pc", "uni_pc_bh2"}
    assert required <= set(SAMPLER_NAMES)


def test_every_listed_sampler_name_has_one_implementation_in_that_order():
    """The torch-free name list (what validation offers) and the implementations are the same set."""
    assert list(SAMPLERS) == SAMPLER_NAMES
