"""σ schedules against independent computations: diffusers' schedulers where one builds the same
schedule, a closed form written here otherwise (see each test for why diffusers does not apply)."""
import math

import numpy as np
import pytest
import scipy.special
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.model_sampling import DiscreteSchedule
from comfyui_sld.sld_core.samplers import SAMPLER_NAMES
from comfyui_sld.sld_core.schedules import (
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS, SCHEDULER_NAMES, calculate_sigmas, ksampler_sigmas,
)

STEPS = [1, 2, 10, 30]
SD1 = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@pytest.fixture(scope="module")
def schedule():
    return DiscreteSchedule()


@pytest.fixture(scope="module")
def table():
    """SD1.x σ table in float64, built here from the β schedule (σ² = (1 − ᾱ)/ᾱ), rounded to float32
    as ComfyUI stores it."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    abar = np.cumprod(1 - betas)
    return np.sqrt((1 - abar) / abar).astype(np.float32).astype(np.float64)


def assert_sigmas(actual, expected, rtol=1e-6):
    expected = torch.as_tensor(np.asarray(expected, dtype=np.float64))
    assert actual.dtype == torch.float32
    assert actual.shape == expected.shape, (actual, expected)
    assert actual[-1] == 0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=0)


# diffusers builds its σ table from a float32 ᾱ, ComfyUI (and we) from a float64 one; at small t, where
# 1 − ᾱ is tiny, that costs diffusers up to ~1.3e-5 relative (σ_min). So diffusers comparisons use this.
DIFFUSERS_RTOL = 2e-5


def diffusers_euler_sigmas(steps, **config):
    scheduler = EulerDiscreteScheduler(**SD1, **config)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.double().numpy()


def log_interp(table, t):
    """σ at fractional timesteps t, interpolating log σ linearly between table entries."""
    return np.exp(np.interp(t, np.arange(len(table)), np.log(table)))


@pytest.mark.parametrize("steps", STEPS)
def test_normal_is_log_interpolated_linspace(schedule, table, steps):
    # ComfyUI interpolates log σ at timesteps linspace(999, 0, steps); diffusers Euler ("linspace")
    # interpolates σ linearly, so diffusers is only an oracle where all timesteps are integers
    # (999/(steps−1) ∈ ℕ, i.e. steps 2 and 10 here); with one step diffusers picks t = 0, ComfyUI t = 999.
    expected = np.append(log_interp(table, np.linspace(999, 0, steps)), 0.0)
    assert_sigmas(calculate_sigmas(schedule, "normal", steps), expected)
    if steps in (2, 10):
        assert_sigmas(calculate_sigmas(schedule, "normal", steps), diffusers_euler_sigmas(steps), rtol=DIFFUSERS_RTOL)


@pytest.mark.parametrize("steps", STEPS)
def test_sgm_uniform_drops_the_last_of_steps_plus_one(schedule, table, steps):
    # diffusers' "trailing" spacing rounds 1000 − k·1000/n − 1 to integers; SGM's grid is 999 − k·999/n,
    # interpolated; they coincide only for one step.
    expected = np.append(log_interp(table, np.linspace(999, 0, steps + 1)[:-1]), 0.0)
    assert_sigmas(calculate_sigmas(schedule, "sgm_uniform", steps), expected)
    if steps == 1:
        assert_sigmas(calculate_sigmas(schedule, "sgm_uniform", 1), diffusers_euler_sigmas(1, timestep_spacing="trailing"), rtol=DIFFUSERS_RTOL)


@pytest.mark.parametrize("steps", STEPS)
def test_simple_takes_every_kth_table_entry(schedule, table, steps):
    # diffusers "trailing" is the same table walk when steps divides 1000 (1, 2, 10 here), not for 30.
    indices = [999 - math.floor(k * (1000 / steps)) for k in range(steps)]
    assert_sigmas(calculate_sigmas(schedule, "simple", steps), np.append(table[indices], 0.0))
    if 1000 % steps == 0:
        assert_sigmas(calculate_sigmas(schedule, "simple", steps), diffusers_euler_sigmas(steps, timestep_spacing="trailing"), rtol=DIFFUSERS_RTOL)


@pytest.mark.parametrize("steps", STEPS)
def test_karras_matches_diffusers(schedule, table, steps):
    ramp = np.linspace(0, 1, steps)
    lo, hi = table[0] ** (1 / 7), table[-1] ** (1 / 7)
    # ComfyUI evaluates this in float32; the 7th power turns one rounding of the base into up to ~7 ulp.
    assert_sigmas(calculate_sigmas(schedule, "karras", steps), np.append((hi + ramp * (lo - hi)) ** 7, 0.0), rtol=3e-6)
    # With one step diffusers' Euler ends its ramp at σ_min instead of starting at σ_max.
    if steps > 1:
        expected = diffusers_euler_sigmas(steps, use_karras_sigmas=True)
        assert_sigmas(calculate_sigmas(schedule, "karras", steps), expected, rtol=DIFFUSERS_RTOL)


@pytest.mark.parametrize("steps", STEPS)
def test_exponential_matches_diffusers(schedule, table, steps):
    expected = np.exp(np.linspace(np.log(table[-1]), np.log(table[0]), steps))
    assert_sigmas(calculate_sigmas(schedule, "exponential", steps), np.append(expected, 0.0))
    if steps > 1:  # one step: as for karras, diffusers picks σ_min
        expected = diffusers_euler_sigmas(steps, use_exponential_sigmas=True)
        assert_sigmas(calculate_sigmas(schedule, "exponential", steps), expected, rtol=DIFFUSERS_RTOL)


@pytest.mark.parametrize("steps", [1, 2, 10])
def test_ddim_uniform_matches_diffusers_ddim_leading_offset_1(schedule, steps):
    scheduler = DDIMScheduler(**SD1, steps_offset=1, set_alpha_to_one=True, timestep_spacing="leading")
    scheduler.set_timesteps(steps)
    abar = scheduler.alphas_cumprod.double()[scheduler.timesteps]
    expected = np.append(((1 - abar) / abar).sqrt().numpy(), 0.0)
    assert_sigmas(calculate_sigmas(schedule, "ddim_uniform", steps), expected, rtol=DIFFUSERS_RTOL)


def test_ddim_uniform_takes_every_stride_even_past_steps(schedule, table):
    # For 30 steps the stride is ⌊1000/30⌋ = 33 and ComfyUI walks 1, 34, …, 991: 31 levels, where
    # diffusers' DDIM stops at 30 (1 … 958). We follow ComfyUI.
    expected = np.append(table[np.arange(1, 1000, 33)][::-1], 0.0)
    sigmas = calculate_sigmas(schedule, "ddim_uniform", 30)
    assert len(sigmas) == 32
    assert_sigmas(sigmas, expected)


@pytest.mark.parametrize("steps", STEPS)
def test_beta_rounds_beta_quantiles_to_table_indices(schedule, table, steps):
    # diffusers' use_beta_sigmas maps the same quantiles to a continuous σ range instead of table
    # timesteps, so the oracle is the definition: t_k = round(999·I⁻¹(1 − k/n; 0.6, 0.6)), repeats merged.
    t = np.rint(scipy.special.betaincinv(0.6, 0.6, 1 - np.arange(steps) / steps) * 999).astype(int)
    t = [v for k, v in enumerate(t) if k == 0 or v != t[k - 1]]
    assert_sigmas(calculate_sigmas(schedule, "beta", steps), np.append(table[t], 0.0))


@pytest.mark.parametrize("steps", STEPS)
def test_linear_quadratic_closed_form(schedule, table, steps):
    # Mochi's schedule: linear 1 → 1 − 0.025 over ⌊n/2⌋ steps, then the quadratic through that point
    # with the same slope that reaches 0 at step n. Checked here through those defining properties.
    sigmas = calculate_sigmas(schedule, "linear_quadratic", steps).double().numpy() / table[-1]
    assert len(sigmas) == steps + 1 and sigmas[0] == 1 and sigmas[-1] == 0
    if steps > 1:
        m = steps // 2
        np.testing.assert_allclose(sigmas[: m + 1], 1 - 0.025 * np.arange(m + 1) / m, rtol=1e-6)
    if steps - steps // 2 >= 2:  # the quadratic part has at least three points
        i = np.arange(m, steps + 1)
        a, b, c = np.polyfit(i, 1 - sigmas[m:], 2)
        np.testing.assert_allclose(1 - sigmas[m:], np.polyval([a, b, c], i), atol=1e-6)
        np.testing.assert_allclose(2 * a * m + b, 0.025 / m, rtol=1e-4)


@pytest.mark.parametrize("steps", STEPS)
def test_kl_optimal_is_uniform_in_arctan_sigma(schedule, table, steps):
    # For one step ComfyUI computes 0/0 (NaN); we return the limit σ_max.
    position = np.arange(steps) / max(steps - 1, 1)
    expected = np.tan(position * math.atan(table[0]) + (1 - position) * math.atan(table[-1]))
    assert_sigmas(calculate_sigmas(schedule, "kl_optimal", steps), np.append(expected, 0.0))


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_schedule_descends_to_zero(schedule, name):
    sigmas = calculate_sigmas(schedule, name, 12)
    assert sigmas.dtype == torch.float32 and sigmas[-1] == 0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_ksampler_discards_penultimate_sigma_for_dpm2_and_unipc(schedule):
    for sampler in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"):
        longer = calculate_sigmas(schedule, "karras", 11)
        expected = torch.cat([longer[:-2], longer[-1:]])
        assert torch.equal(ksampler_sigmas(schedule, sampler, "karras", 10), expected)
    assert torch.equal(ksampler_sigmas(schedule, "euler", "karras", 10), calculate_sigmas(schedule, "karras", 10))
    assert DISCARD_PENULTIMATE_SIGMA_SAMPLERS <= set(SAMPLER_NAMES)  # the rule names real samplers only


def test_ksampler_partial_denoise_keeps_the_tail(schedule):
    sigmas = ksampler_sigmas(schedule, "euler", "normal", 10, denoise=0.6)
    assert torch.equal(sigmas, calculate_sigmas(schedule, "normal", 16)[-11:])  # int(10/0.6) = 16
    assert torch.equal(ksampler_sigmas(schedule, "euler", "normal", 10, denoise=0.99995), calculate_sigmas(schedule, "normal", 10))
    assert ksampler_sigmas(schedule, "euler", "normal", 10, denoise=0.0).numel() == 0
    assert ksampler_sigmas(schedule, "euler", "normal", 10, denoise=-1.0).numel() == 0


def test_unknown_names_and_bad_steps_are_rejected(schedule):
    with pytest.raises(InvalidInputError, match="karras"):
        ksampler_sigmas(schedule, "euler", "fancy", 10)
    with pytest.raises(InvalidInputError, match="karras"):
        calculate_sigmas(schedule, "fancy", 10)
    for steps in (0, -3, 2.5):
        with pytest.raises(InvalidInputError, match="steps"):
            ksampler_sigmas(schedule, "euler", "karras", steps)


def test_every_listed_scheduler_name_has_one_implementation_in_that_order():
    from comfyui_sld.sld_core.schedules import SCHEDULERS

    assert list(SCHEDULERS) == SCHEDULER_NAMES
