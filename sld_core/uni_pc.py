"""UniPC: the unified predictor–corrector multistep solver of Zhao et al. (2023), "UniPC: A Unified
Predictor-Corrector Framework for Fast Sampling of Diffusion Models" (arXiv:2302.04867), as ComfyUI's
``uni_pc`` and ``uni_pc_bh2`` samplers run it for an ε model.

UniPC works in variance-preserving space: x_vp = α·x with α = 1/√(1+σ²), σ_vp = √(1−α²), and
λ = log(α/σ_vp) (= −log σ). Each step predicts x at the next λ with a UniP-p update from the last p
data predictions (multistep, data-prediction form), evaluates the denoiser there, and corrects the
same step with UniC using that new evaluation, which is then reused by the next step, so a step
costs one model call. B(h) = h ("bh1") or e^h − 1 ("bh2") picks the coefficient family.

ComfyUI specifics reproduced here: the solver order is min(3, steps − 1) with lower orders on the
first steps (warm-up) and on the last ones; a final σ of 0 is replaced by 0.001 (λ is infinite at 0)
and the result divided by α(0.001); the last step has no corrector. With a single step (two σ) this
evaluates the model once and returns the start latent essentially unchanged, as ComfyUI does.
"""
import torch
from tqdm.auto import trange

FINAL_SIGMA = 0.001


def _vp(sigma):
    """(α, σ_vp, λ) of a σ-space noise level, with ComfyUI's formulas (they set the float32 rounding)."""
    log_alpha = 0.5 * torch.log(1 / (sigma * sigma + 1))
    std = torch.sqrt(1.0 - torch.exp(2.0 * log_alpha))
    return log_alpha.exp(), std, log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _unipc_step(x, history, sigma_t, order, variant, denoise_vp):
    """One UniP-``order`` step from the last entry of ``history`` ([(σ, x̂₀), …], oldest first) to σ_t,
    and, if ``denoise_vp`` is given, its UniC correction. Returns (x_t, x̂₀(x_t) or None)."""
    sigma_0, model_0 = history[-1]
    _, std_0, lam_0 = _vp(sigma_0)
    alpha_t, std_t, lam_t = _vp(sigma_t)
    h = lam_t - lam_0
    hh = -h  # data-prediction form integrates in −λ
    h_phi_1 = torch.expm1(hh)
    b_h = hh if variant == "bh1" else torch.expm1(hh)

    # Divided differences of the past estimates, at relative positions r_k = (λ_{−k} − λ_0)/h.
    ratios, diffs = [], []
    for k in range(1, order):
        sigma_k, model_k = history[-(k + 1)]
        r_k = (_vp(sigma_k)[2] - lam_0) / h
        ratios.append(r_k)
        diffs.append((model_k - model_0) / r_k)
    ratios = torch.tensor([*ratios, 1.0], device=x.device)

    # UniPC's linear system (paper eq. 8): rows r^(i−1), right side i!·h·φ_{i+1}(h)/B(h), i = 1..p.
    rows, rhs = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for i in range(1, order + 1):
        rows.append(ratios ** (i - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    rows = torch.stack(rows)
    rhs = torch.tensor(rhs, device=x.device)

    x_first_order = (std_t / std_0) * x - alpha_t * h_phi_1 * model_0
    x_t = x_first_order
    if diffs:
        rhos_p = torch.tensor([0.5], device=x.device) if order == 2 else torch.linalg.solve(rows[:-1, :-1], rhs[:-1])
        x_t = x_first_order - alpha_t * b_h * sum(rho * d for rho, d in zip(rhos_p, diffs))
    if denoise_vp is None:
        return x_t, None

    model_t = denoise_vp(x_t, sigma_t)
    rhos_c = torch.tensor([0.5], device=x.device) if order == 1 else torch.linalg.solve(rows, rhs)
    correction = sum(rho * d for rho, d in zip(rhos_c[:-1], diffs)) + rhos_c[-1] * (model_t - model_0)
    return x_first_order - alpha_t * b_h * correction, model_t


@torch.no_grad()
def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, variant="bh1"):
    """UniPC multistep sampling (Zhao et al. 2023, Alg. 1 with UniP/UniC-p, data prediction)."""
    extra_args = {} if extra_args is None else extra_args
    sigmas = sigmas.clone()
    if sigmas[-1] == 0:
        sigmas[-1] = FINAL_SIGMA
    steps = len(sigmas) - 1
    order = min(3, steps - 1)
    s_in = x.new_ones([x.shape[0]])

    def denoise_vp(x_vp, sigma):
        return model(x_vp * torch.sqrt(sigma**2 + 1.0), sigma * s_in, **extra_args)

    x = x / torch.sqrt(1.0 + sigmas[0] ** 2)
    history = [(sigmas[0], denoise_vp(x, sigmas[0]))]
    _report(callback, x, 0, sigmas[0], history[-1][1])
    for i in trange(1, steps + 1 if order >= 1 else 1, disable=disable):
        step_order = min(order, i, steps + 1 - i)
        last = i == steps
        x, model_x = _unipc_step(x, history, sigmas[i], step_order, variant, None if last else denoise_vp)
        if not last:
            history = (history + [(sigmas[i], model_x)])[-order:]
            _report(callback, x, i, sigmas[i], model_x)
    alpha_end = _vp(sigmas[-1])[0]
    return x / alpha_end


def _report(callback, x_vp, i, sigma, denoised):
    # Observers see x in σ space like every other sampler (ComfyUI passes UniPC's VP-space x here).
    if callback is not None:
        x = x_vp * torch.sqrt(sigma**2 + 1.0)
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """UniPC with B(h) = e^h − 1 (the paper's bh2 variant), ComfyUI's ``uni_pc_bh2``."""
    return sample_uni_pc(model, x, sigmas, extra_args, callback, disable, variant="bh2")

