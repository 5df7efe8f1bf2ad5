"""Sigma schedules: which noise levels a sampler visits, as ComfyUI's ``KSampler`` chooses them.

Every schedule is a pure function ``fn(schedule, steps) -> Tensor[steps + 1]`` (float32, descending,
last entry 0) of a `DiscreteSchedule` σ table and a step count. The values equal those of ComfyUI's
``comfy/samplers.py`` schedulers for the same model, because a workflow file must give the same
image in ComfyUI and here. `ksampler_sigmas` adds KSampler's two adjustments on top: the extra step
some samplers discard and partial denoise.

A few schedules can return fewer than ``steps + 1`` values, exactly as ComfyUI's do: ``beta`` merges
steps that round to the same table index, and ``ddim_uniform`` takes every ⌊1000/steps⌋-th table entry,
which for step counts that do not divide 1000 gives *more* steps than asked for.
"""
import math

import numpy as np
import scipy.stats
import torch

from .errors import InvalidInputError
from .sampling_names import SCHEDULER_NAMES

# These samplers get a schedule for steps + 1 with the second-to-last σ dropped (ComfyUI's KSampler rule).
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def _with_zero(sigmas):
    return torch.cat([sigmas.float(), sigmas.new_zeros([1], dtype=torch.float32)])


def normal(schedule, steps):
    """Timesteps evenly spaced from T−1 down to 0, σ interpolated in log space between table entries.

    diffusers' Euler ``timestep_spacing="linspace"`` picks the same timesteps but interpolates σ
    linearly; the two agree only where 999/(steps−1) is an integer.
    """
    return _with_zero(_sigmas_at_timesteps(schedule, _timesteps_linspace(schedule, steps)))


def sgm_uniform(schedule, steps):
    """Like `normal`, but ``steps`` timesteps from an even grid of ``steps + 1`` with the last (t=0)
    dropped, as SGM/SDXL samples ("trailing" spacing)."""
    return _with_zero(_sigmas_at_timesteps(schedule, _timesteps_linspace(schedule, steps + 1)[:-1]))


def _timesteps_linspace(schedule, n):
    start = float(schedule.timestep(schedule.sigma_max))
    end = float(schedule.timestep(schedule.sigma_min))
    return torch.linspace(start, end, n)


def _sigmas_at_timesteps(schedule, timesteps):
    return torch.stack([schedule.sigma(t) for t in timesteps])


def simple(schedule, steps):
    """Every (T/steps)-th table entry counted down from the top: σ[T−1−⌊k·T/steps⌋], k = 0..steps−1."""
    stride = schedule.num_timesteps / steps
    indices = [schedule.num_timesteps - 1 - int(k * stride) for k in range(steps)]
    return _with_zero(schedule.sigmas[indices])


def ddim_uniform(schedule, steps):
    """Table entries at timesteps 1, 1+s, 1+2s, … (s = ⌊T/steps⌋), descending: DDIM's "leading" spacing
    with ``steps_offset=1``. For steps not dividing T this visits more than ``steps`` levels, as
    ComfyUI's ``ddim_uniform`` does."""
    stride = max(schedule.num_timesteps // steps, 1)
    indices = list(range(1, schedule.num_timesteps, stride))[::-1]
    return _with_zero(schedule.sigmas[indices])


def karras(schedule, steps, rho=7.0):
    """`karras_sigmas` between the model's σ_min and σ_max."""
    return karras_sigmas(steps, float(schedule.sigma_min), float(schedule.sigma_max), rho)


def karras_sigmas(steps, sigma_min, sigma_max, rho=7.0):
    """Karras et al. (2022), eq. 5: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, then 0.
    (ComfyUI's ``KarrasScheduler`` node takes the three numbers as inputs.)"""
    ramp = torch.linspace(0, 1, steps)
    inv_max = sigma_max ** (1 / rho)
    inv_min = sigma_min ** (1 / rho)
    return _with_zero((inv_max + ramp * (inv_min - inv_max)) ** rho)


def sd_turbo(schedule, steps, denoise=1.0):
    """SD-Turbo's schedule (ComfyUI's ``SDTurboScheduler``): of the ten timesteps 999, 899, …, 99 it
    was distilled on, ``steps`` consecutive ones starting ⌊10·(1 − denoise)⌋ in, then 0."""
    start = 10 - int(10 * denoise)
    timesteps = torch.arange(999, 0, -100)[start:start + steps]
    return _with_zero(schedule.sigma(timesteps))


def exponential(schedule, steps):
    """σ evenly spaced in log σ from σ_max to σ_min."""
    log_sigmas = torch.linspace(math.log(float(schedule.sigma_max)), math.log(float(schedule.sigma_min)), steps)
    return _with_zero(log_sigmas.exp())


def beta(schedule, steps, alpha=0.6, beta=0.6):
    """Lee et al. (2024), "Beta Sampling is All You Need" (arXiv:2407.12173): timesteps at the quantiles
    of a Beta(0.6, 0.6) distribution, rounded to table indices; repeated indices are merged."""
    last = schedule.num_timesteps - 1
    quantiles = 1.0 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(scipy.stats.beta.ppf(quantiles, alpha, beta) * last).astype(int)
    keep = [t for k, t in enumerate(timesteps) if k == 0 or t != timesteps[k - 1]]
    return _with_zero(schedule.sigmas[keep])


def linear_quadratic(schedule, steps, threshold_noise=0.025, linear_steps=None):
    """Mochi's schedule (genmoai/models): σ/σ_max falls linearly by ``threshold_noise`` over the first
    half of the steps, then quadratically to 0, continuous in value and slope at the joint."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        n_lin = steps // 2 if linear_steps is None else linear_steps
        n_quad = steps - n_lin
        # 1 − σ/σ_max on the quadratic part is a·i² + b·i + c for i = n_lin..steps, with value
        # threshold_noise and slope threshold_noise/n_lin at i = n_lin, and value 1 at i = steps.
        excess = n_lin - threshold_noise * steps
        a = excess / (n_lin * n_quad**2)
        b = threshold_noise / n_lin - 2 * excess / n_quad**2
        c = a * n_lin**2
        rising = [i * threshold_noise / n_lin for i in range(n_lin)]
        rising += [a * i**2 + b * i + c for i in range(n_lin, steps)]
        fractions = [1.0 - r for r in rising] + [0.0]
    return torch.tensor(fractions, dtype=torch.float32) * schedule.sigma_max.cpu()


def kl_optimal(schedule, steps):
    """The KL-optimal schedule of Sabour et al. (2024), "Align Your Steps" appendix: σ evenly spaced in
    arctan σ from σ_max to σ_min.

    For ``steps == 1`` ComfyUI divides 0 by 0 and returns NaN; we return the limit [σ_max, 0]."""
    position = torch.arange(steps, dtype=torch.float32) / max(steps - 1, 1)
    atan_min, atan_max = math.atan(float(schedule.sigma_min)), math.atan(float(schedule.sigma_max))
    return _with_zero((position * atan_min + (1 - position) * atan_max).tan())


# ComfyUI's order (KSampler.SCHEDULERS); the first entry is its fallback.
SCHEDULERS = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}


def _check_scheduler_and_steps(scheduler_name, steps):
    if scheduler_name not in SCHEDULERS:
        raise InvalidInputError(f"unknown scheduler {scheduler_name!r}; valid names: {', '.join(SCHEDULER_NAMES)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidInputError(f"steps must be an integer >= 1, got {steps!r}")


def calculate_sigmas(schedule, scheduler_name, steps):
    """The σ schedule called ``scheduler_name`` for ``steps`` steps."""
    _check_scheduler_and_steps(scheduler_name, steps)
    return SCHEDULERS[scheduler_name](schedule, steps)


def ksampler_sigmas(schedule, sampler_name, scheduler_name, steps, denoise=1.0):
    """The σ sequence ComfyUI's ``KSampler`` node runs for these inputs.

    Two adjustments on top of the schedule: samplers in `DISCARD_PENULTIMATE_SIGMA_SAMPLERS` get a
    schedule for ``steps + 1`` steps with the second-to-last σ removed (their final step to 0 would
    otherwise be a wasted half step), and partial denoise (`_partial_denoise`). ``sampler_name`` is
    only looked up in that set: validating it is `samplers.get_sampler`'s job, which the caller
    (`ksample`) does first.
    """
    def schedule_for(total_steps):
        if sampler_name not in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            return calculate_sigmas(schedule, scheduler_name, total_steps)
        sigmas = calculate_sigmas(schedule, scheduler_name, total_steps + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])

    full = denoise is None or denoise > 0.9999  # KSampler rounds denoise near 1 up; BasicScheduler does not
    return _partial_denoise(schedule_for, scheduler_name, steps, denoise, full)


def scheduler_sigmas(schedule, scheduler_name, steps, denoise=1.0):
    """The σ sequence of ComfyUI's ``BasicScheduler`` node: `ksampler_sigmas`' partial-denoise rule
    without its per-sampler adjustment (a SIGMAS value does not know its sampler)."""
    return _partial_denoise(lambda total: calculate_sigmas(schedule, scheduler_name, total),
                            scheduler_name, steps, denoise, full=denoise >= 1.0)


def advanced_sigmas(sigmas, start_step=None, last_step=None, force_full_denoise=False):
    """KSamplerAdvanced's slice of a schedule, as ComfyUI's KSampler.sample cuts it (headless and in
    the ComfyUI bridge alike): up to step `last_step` (its σ set to 0 when `force_full_denoise`), from
    step `start_step`; None when the slice holds no step."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


def _partial_denoise(schedule_for, scheduler_name, steps, denoise, full):
    """``full``: ``schedule_for(steps)``. Else ``denoise <= 0`` gives an empty tensor (nothing to do),
    and ``0 < denoise < 1`` computes ``int(steps/denoise)`` steps and keeps only the last ``steps + 1`` σ
    (img2img starts part-way down)."""
    _check_scheduler_and_steps(scheduler_name, steps)  # before denoise ≤ 0 returns early
    if full:
        return schedule_for(steps)
    if denoise <= 0.0:
        return torch.zeros([0], dtype=torch.float32)
    return schedule_for(int(steps / denoise))[-(steps + 1):]
