"""Samplers: numerical solvers of the diffusion ODE/SDE over a denoiser, in k-diffusion's σ language.

Contract (the one ComfyUI's ``KSAMPLER`` uses, so a guider written for it works here):

- ``model(x, sigma, **extra_args) -> denoised`` is a *denoiser*: given x = x₀ + σ·ε (σ as a [B]
  tensor) it returns its estimate of x₀. ``extra_args`` is passed to every call verbatim; ComfyUI
  puts ``seed`` (and ``model_options``, ``denoise_mask``) in it, so the model must accept and may
  ignore a ``seed`` keyword.
- ``x`` is the start latent already scaled to σ₀ (noise·σ₀ + latent; see
  `DiscreteSchedule.noise_scaling`), ``sigmas`` the descending σ sequence (usually ending in 0).
- Stochastic samplers take their seed from ``extra_args.get("seed")`` and draw exactly what ComfyUI
  draws, in the same order (`noise.default_noise_sampler`, `noise.BrownianTreeNoiseSampler`); pass
  ``noise_sampler=`` to supply noise yourself. Samplers without churn draw nothing.
- ``callback({"x", "i", "sigma", "sigma_hat", "denoised"})`` is called once per step; progress is a
  tqdm bar unless ``disable``.

All samplers here are for ε-type models (SD1.x), where the VP signal scale α is 1 in σ space; that is
the only model family sld_core loads. ``d = (x − denoised)/σ`` is the probability-flow ODE's dx/dσ.
"""
import torch
from scipy import integrate
from tqdm.auto import trange

from .errors import InvalidInputError
from .noise import brownian_noise_sampler, default_noise_sampler
from .sampling_names import SAMPLER_NAMES
from .uni_pc import sample_uni_pc, sample_uni_pc_bh2


def to_d(x, sigma, denoised):
    """dx/dσ of the probability-flow ODE, (x − D(x, σ))/σ (Karras et al. 2022, eq. 1 with σ(t) = t)."""
    sigma = torch.as_tensor(sigma)
    return (x - denoised) / sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim))


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Split a step σ_from → σ_to into a deterministic step to σ_down and fresh noise of std σ_up,
    with σ_down² + σ_up² = σ_to² (DDPM ancestral sampling; ``eta`` scales σ_up, 0 = deterministic)."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al. (2022) Alg. 2 lines 4–6: raise σ_i to σ̂ = σ_i(1+γ) by adding noise. Draws from
    torch's global generator, and only when γ > 0, as ComfyUI does."""
    gamma = 0.0
    if s_churn > 0 and s_tmin <= sigmas[i] <= s_tmax:
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1)
    sigma_hat = sigmas[i] * (gamma + 1)
    if gamma > 0:
        x = x + torch.randn_like(x) * s_noise * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def _report(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler steps on the probability-flow ODE, optionally with churn: Karras et al. (2022), Alg. 2
    without the second-order correction."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + to_d(x, sigma_hat, denoised) * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler=None):
    """Euler step to σ_down, then fresh noise of std σ_up (ancestral sampling, Ho et al. 2020, in
    k-diffusion's σ form). The last step to σ = 0 returns the denoised estimate and draws nothing."""
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x, seed=extra_args.get("seed"))
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
            continue
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's method (trapezoidal predictor–corrector), Karras et al. (2022), Alg. 2; the last step to
    σ = 0 is a plain Euler step (D at σ = 0 is undefined)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_next = x + d * dt
        d_next = to_d(x_next, sigmas[i + 1], model(x_next, sigmas[i + 1] * s_in, **extra_args))
        x = x + (d + d_next) / 2 * dt
    return x


def _log_midpoint(sigma_a, sigma_b):
    return sigma_a.log().lerp(sigma_b.log(), 0.5).exp()


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Second-order midpoint steps with the midpoint at the geometric mean of σ_i and σ_{i+1}: DPM-Solver-2
    (Lu et al. 2022) in the form of Karras et al. (2022), Alg. 2. Last step to 0: Euler."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
            continue
        sigma_mid = _log_midpoint(sigma_hat, sigmas[i + 1])
        x_mid = x + d * (sigma_mid - sigma_hat)
        d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
        x = x + d_mid * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler=None):
    """`sample_dpm_2` steps to σ_down followed by fresh noise of std σ_up (ancestral)."""
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x, seed=extra_args.get("seed"))
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
            continue
        sigma_mid = _log_midpoint(sigmas[i], sigma_down)
        x_mid = x + d * (sigma_mid - sigmas[i])
        d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
        x = x + d_mid * (sigma_down - sigmas[i])
        x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _lms_coefficient(order, sigmas, i, j):
    """∫ from σ_i to σ_{i+1} of the Lagrange basis polynomial through σ_i, …, σ_{i−order+1} that is 1 at σ_{i−j}."""
    def basis(tau):
        value = 1.0
        for k in range(order):
            if k != j:
                value *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
        return value

    return integrate.quad(basis, sigmas[i], sigmas[i + 1], epsrel=1e-4)[0]


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep (Adams–Bashforth with variable steps) on dx/dσ, up to ``order`` past derivatives
    (Karras et al. 2022, k-diffusion). The last step to σ = 0 returns the denoised estimate."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    sigmas_np = sigmas.detach().cpu().numpy()
    history = []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        history = (history + [to_d(x, sigmas[i], denoised)])[-order:]
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        current = min(i + 1, order)
        coeffs = [_lms_coefficient(current, sigmas_np, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(history)))
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                              eta=1.0, s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2S) (Lu et al. 2022, Alg. 1, r = ½) to σ_down, then ancestral noise of std σ_up."""
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = default_noise_sampler(x, seed=extra_args.get("seed"))
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            # λ = −log σ; the half step is at λ + h/2, i.e. σ_s = √(σ_i σ_down).
            lam, lam_next = -sigmas[i].log(), -sigma_down.log()
            h = lam_next - lam
            sigma_s = (-(lam + h / 2)).exp()
            x_s = (sigma_s / sigmas[i]) * x - (-h / 2).expm1() * denoised
            denoised_s = model(x_s, sigma_s * s_in, **extra_args)
            x = (sigma_down / sigmas[i]) * x - (-h).expm1() * denoised_s
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None,
                     eta=1.0, s_noise=1.0, noise_sampler=None, r=1 / 2, _cpu_tree=True):
    """DPM-Solver++ (stochastic, singlestep, two evaluations per step at λ_s + r·h and λ_t), noise from
    a Brownian tree: the SDE variant of Lu et al. (2022) as in k-diffusion. λ = −log σ."""
    if len(sigmas) <= 1:
        return x
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = brownian_noise_sampler(x, sigmas, seed=extra_args.get("seed"), cpu=_cpu_tree)
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = -sigmas[i].log(), -sigmas[i + 1].log()
        sigma_s1 = (-(lam_s + r * (lam_t - lam_s))).exp()
        # Stage 1: ancestral DPM-Solver++(1) step to σ_s1 (deterministic part to σ_down, noise σ_up).
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigma_s1, eta)
        x_1 = (sigma_down / sigmas[i]) * x - (-(sigma_down.log().neg() - lam_s)).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_1 = x_1 + noise_sampler(sigmas[i], sigma_s1) * s_noise * sigma_up
        denoised_1 = model(x_1, sigma_s1 * s_in, **extra_args)
        # Stage 2: the full step with the two estimates combined (second-order in λ).
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        fac = 1 / (2 * r)
        denoised_d = (1 - fac) * denoised + fac * denoised_1
        x = (sigma_down / sigmas[i]) * x - (-(sigma_down.log().neg() - lam_s)).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M), Lu et al. (2022), Alg. 2: multistep, second order from the previous denoised
    estimate; first order on the first step and on the last step to σ = 0 (which returns denoised)."""
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        lam, lam_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = lam_next - lam
        estimate = denoised
        if old_denoised is not None and sigmas[i + 1] != 0:
            r = (lam - (-sigmas[i - 1].log())) / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * estimate
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None,
                        eta=1.0, s_noise=1.0, noise_sampler=None, solver_type="midpoint", _cpu_tree=True):
    """DPM-Solver++(2M) SDE (Lu et al. 2022, SDE form of Alg. 2), ``solver_type`` "midpoint" or "heun"
    for the second-order correction; Brownian-tree noise. The last step to σ = 0 returns denoised."""
    if len(sigmas) <= 1:
        return x
    if solver_type not in ("heun", "midpoint"):
        raise ValueError("solver_type must be 'heun' or 'midpoint'")
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = brownian_noise_sampler(x, sigmas, seed=extra_args.get("seed"), cpu=_cpu_tree)
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h, h_last = None, None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()  # λ_next − λ with λ = −log σ
            h_eta = h * (eta + 1)
            gain = (-h_eta).expm1().neg()  # 1 − e^(−h(1+η)), the weight of the new estimate
            x = (sigmas[i + 1] / sigmas[i]) * (-h * eta).exp() * x + gain * denoised
            if old_denoised is not None:
                slope = (h / h_last) * (denoised - old_denoised)  # (1/r)·ΔD with r = h_last/h
                if solver_type == "heun":
                    x = x + (gain / (-h_eta) + 1) * slope
                else:
                    x = x + 0.5 * gain * slope
            if eta > 0 and s_noise > 0:
                scale = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * scale
        old_denoised, h_last = denoised, h
    return x


def sample_dpmpp_2m_sde_heun(model, x, sigmas, extra_args=None, callback=None, disable=None,
                             eta=1.0, s_noise=1.0, noise_sampler=None):
    """`sample_dpmpp_2m_sde` with the Heun-type second-order correction."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, "heun")


def sample_dpmpp_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None,
                         eta=1.0, s_noise=1.0, noise_sampler=None, r=1 / 2):
    """`sample_dpmpp_sde` with the Brownian tree on the latent's device (different noise than on CPU)."""
    return sample_dpmpp_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r, _cpu_tree=False)


def sample_dpmpp_2m_sde_gpu(model, x, sigmas, extra_args=None, callback=None, disable=None,
                            eta=1.0, s_noise=1.0, noise_sampler=None, solver_type="midpoint"):
    """`sample_dpmpp_2m_sde` with the Brownian tree on the latent's device (different noise than on CPU)."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler,
                               solver_type, _cpu_tree=False)


# ComfyUI's names (KSampler.SAMPLERS order). "ddim" is euler in ComfyUI; its only difference there is
# an inpainting option ("random" noise for the masked-out region), which has no effect without a mask.
SAMPLERS = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpm_2": sample_dpm_2,
    "dpm_2_ancestral": sample_dpm_2_ancestral,
    "lms": sample_lms,
    "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
    "dpmpp_sde": sample_dpmpp_sde,
    "dpmpp_sde_gpu": sample_dpmpp_sde_gpu,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": sample_dpmpp_2m_sde_gpu,
    "dpmpp_2m_sde_heun": sample_dpmpp_2m_sde_heun,
    "ddim": sample_euler,
    "uni_pc": sample_uni_pc,
    "uni_pc_bh2": sample_uni_pc_bh2,
}


def get_sampler(name):
    """The sampler function called ``name`` (a ComfyUI ``sampler_name``)."""
    if name not in SAMPLERS:
        raise InvalidInputError(f"unknown sampler_name {name!r}; expected one of {', '.join(SAMPLER_NAMES)}")
    return SAMPLERS[name]
