"""The discrete noise schedule of an ε-prediction SD1.x model, in k-diffusion's σ language.

Owns the table σ_t = √((1 − ᾱ_t)/ᾱ_t) for t = 0..T−1 and the conversions ComfyUI uses between σ and
the UNet's timestep, so that a schedule computed here feeds the UNet exactly what ComfyUI feeds it.
"""
import math

import torch


class DiscreteSchedule:
    """σ table of a DDPM-trained ε model (ComfyUI's ``ModelSamplingDiscrete`` for SD1.x).

    ``beta_schedule="scaled_linear"`` is diffusers' name for what LDM/ComfyUI call "linear":
    β = linspace(√β_start, √β_end, T)². The table is built in float64 and stored in float32, as ComfyUI
    stores it.
    """

    def __init__(self, beta_start=0.00085, beta_end=0.012, num_timesteps=1000, beta_schedule="scaled_linear"):
        if beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected 'scaled_linear' or 'linear'")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.beta_start, self.beta_end, self.beta_schedule = beta_start, beta_end, beta_schedule
        self.sigmas = sigmas.float()
        self.log_sigmas = sigmas.log().float()
        self._log_sigmas_by_device = {self.log_sigmas.device: self.log_sigmas}

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
