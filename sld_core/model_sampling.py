"""The discrete noise schedule of an SD model and its prediction type, in k-diffusion's σ language.

Owns the table σ_t = √((1 − ᾱ_t)/ᾱ_t) for t = 0..T−1, the conversions ComfyUI uses between σ and
the UNet's timestep, and what the UNet's output means (ComfyUI's ``ModelSamplingDiscrete`` with its
``EPS`` or ``V_PREDICTION`` mixin), so that a schedule computed here feeds the UNet exactly what
ComfyUI feeds it and reads its output the same way.

Prediction types, for x = x₀ + σ·ε and the UNet input x/√(σ²+1) (= √ᾱ·x₀ + √(1−ᾱ)·ε):

* ``epsilon``: the UNet predicts ε; x̂₀ = x − σ·ε.
* ``v_prediction``: the UNet predicts v = √ᾱ·ε − √(1−ᾱ)·x₀ (diffusers' ``get_velocity``);
  x̂₀ = x/(σ²+1) − v·σ/√(σ²+1), ComfyUI's ``V_PREDICTION.calculate_denoised`` with σ_data = 1.

Whatever the prediction type, guidance that works on noise predictions (CFG, SLD) gets the ε the
output implies, ε = (x − x̂₀)/σ (`DiscreteSchedule.eps`).

Zero-terminal-SNR (``zsnr``, ComfyUI's ``ModelSamplingDiscrete`` node option) rescales the table so
the last step's √ᾱ is 0 (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", Alg. 1); ComfyUI then sets that ᾱ to 4.8973451890853435e-08 instead of 0, so σ_max stays
finite (≈ 4500), and so do we.
"""
import math

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")
# ComfyUI's names (the ModelSamplingDiscrete node's "sampling" input) → ours (diffusers' names).
COMFY_PREDICTION_NAMES = {"eps": "epsilon", "v_prediction": "v_prediction"}
ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08


def rescale_zero_terminal_snr(sigmas):
    """σ table (float64) rescaled so √ᾱ runs from its first value down to 0 at the last step, linearly
    in √ᾱ; the last ᾱ is then set to `ZSNR_LAST_ALPHA_BAR` (ComfyUI's value) to keep σ finite."""
    root = (1.0 / (sigmas**2 + 1.0)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alphas_cumprod = root**2
    alphas_cumprod[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


class DiscreteSchedule:
    """σ table and prediction type of a DDPM-trained model (ComfyUI's ``ModelSamplingDiscrete``).

    ``beta_schedule="scaled_linear"`` is diffusers' name for what LDM/ComfyUI call "linear":
    β = linspace(√β_start, √β_end, T)². The table is built in float64 and stored in float32, as ComfyUI
    stores it. ``prediction_type``: "epsilon" or "v_prediction"; ``zsnr``: zero-terminal-SNR rescaling.
    """

    def __init__(self, beta_start=0.00085, beta_end=0.012, num_timesteps=1000, beta_schedule="scaled_linear",
                 prediction_type="epsilon", zsnr=False):
        if beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected 'scaled_linear' or 'linear'")
        prediction_type = COMFY_PREDICTION_NAMES.get(prediction_type, prediction_type)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if zsnr:
            sigmas = rescale_zero_terminal_snr(sigmas)
        self.beta_start, self.beta_end, self.beta_schedule = beta_start, beta_end, beta_schedule
        self.num_train_timesteps = num_timesteps
        self.prediction_type, self.zsnr = prediction_type, bool(zsnr)
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()
        self._log_sigmas_by_device = {self.log_sigmas.device: self.log_sigmas}

    def with_sampling(self, prediction_type, zsnr=False):
        """The same β schedule with another prediction type / zero-terminal-SNR setting (what ComfyUI's
        ModelSamplingDiscrete node patches into a model)."""
        return DiscreteSchedule(self.beta_start, self.beta_end, self.num_train_timesteps, self.beta_schedule,
                                prediction_type, zsnr)

    def denoised(self, x, sigma, output):
        """x̂₀ from the UNet's ``output`` for x at σ (shape [B] or scalar), by the prediction type."""
        sigma = _per_sample(sigma, x)
        if self.prediction_type == "epsilon":
            return x - output * sigma
        return x / (sigma**2 + 1.0) - output * sigma / (sigma**2 + 1.0) ** 0.5

    def eps(self, x, sigma, output):
        """The ε the UNet's ``output`` implies, ε = (x − x̂₀)/σ. For ε models that is the output itself;
        for v models it is written out, x·σ/(σ²+1) + v/√(σ²+1), which stays exact at small σ."""
        if self.prediction_type == "epsilon":
            return output
        sigma = _per_sample(sigma, x)
        return x * sigma / (sigma**2 + 1.0) + output / (sigma**2 + 1.0) ** 0.5

    @property
    def num_timesteps(self):
        return len(self.sigmas)

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def timestep(self, sigma):
        """The UNet timestep for σ: the index of the nearest table entry in log σ (as ComfyUI does).
        Computed on σ's device, so a CUDA sampling loop does not wait for a copy to the host."""
        dists = sigma.log().flatten() - self._log_sigmas_on(sigma.device)[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def _log_sigmas_on(self, device):
        if device not in self._log_sigmas_by_device:
            self._log_sigmas_by_device[device] = self.log_sigmas.to(device)
        return self._log_sigmas_by_device[device]

    def sigma(self, timestep):
        """σ at a (possibly fractional) timestep, interpolated linearly in log σ."""
        t = torch.as_tensor(timestep).float().clamp(0, self.num_timesteps - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def is_max_sigma(self, sigma):
        """Whether sampling starts from pure noise (σ₀ at or above σ_max), ComfyUI's ``max_denoise``."""
        sigma_max = float(self.sigma_max)
        sigma = float(sigma)
        return math.isclose(sigma_max, sigma, rel_tol=1e-05) or sigma > sigma_max

    def noise_scaling(self, sigma, noise, latent):
        """x_T for a start at σ: noise·√(1+σ²) from pure noise (ComfyUI's max-denoise rule), else noise·σ,
        added to the (model-space) latent. The √(1+σ²) keeps the VP-space variance at 1, as a DDPM
        sample at t=T has; ComfyUI applies it only at full denoise, so we do too."""
        sigma_t = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device)
        scale = torch.sqrt(1.0 + sigma_t**2) if self.is_max_sigma(sigma) else sigma_t
        return noise * scale + latent


def _per_sample(sigma, x):
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.view(-1, *([1] * (x.ndim - 1))) if sigma.ndim else sigma
