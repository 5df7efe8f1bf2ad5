"""Stand-in for comfy/model_sampling.py: what a model's output means, and its σ table.

As in ComfyUI, a model's `model_sampling` is one object of a class combining a σ table
(`ModelSamplingDiscrete`: SD's 1000 discrete timesteps; `ModelSamplingDiscreteFlow`: σ = t/1000) with a
prediction type: `EPS` (x = x₀ + σ·ε, the UNet predicts ε), `V_PREDICTION` (same noise, the UNet predicts
v) or `CONST` (rectified flow: x = (1 − σ)·x₀ + σ·noise, the model predicts the velocity, SD3/Flux).
`model_base.make_sampling(table, prediction)` builds such an object, as ComfyUI's model_base does.
"""
import torch


def _column(sigma, ndim):
    """σ as a scalar, or as [B, 1, 1, ...] to multiply a batch."""
    return sigma.view(()) if sigma.nelement() == 1 else sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


class EPS:
    def calculate_input(self, sigma, noise):
        return noise / (_column(sigma, noise.ndim) ** 2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * _column(sigma, model_output.ndim)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        """x = latent + σ·noise, or √(1+σ²)·noise at full denoise (the model's variance at σ_max)."""
        sigma = _column(torch.as_tensor(sigma, dtype=noise.dtype), noise.ndim)
        return noise * ((1.0 + sigma**2).sqrt() if max_denoise else sigma) + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class V_PREDICTION(EPS):
    def calculate_denoised(self, sigma, model_output, model_input):
        """x̂₀ = x·σ_d²/(σ²+σ_d²) − v·σ·σ_d/√(σ²+σ_d²) (Salimans & Ho's v, in σ-space)."""
        sigma = _column(sigma, model_output.ndim)
        total = sigma**2 + self.sigma_data**2
        return model_input * self.sigma_data**2 / total - model_output * sigma * self.sigma_data / total**0.5


class CONST:
    def calculate_input(self, sigma, noise):
        return noise

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * _column(sigma, model_output.ndim)

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = _column(torch.as_tensor(sigma, dtype=noise.dtype), noise.ndim)
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - _column(torch.as_tensor(sigma), latent.ndim))


class _Table:
    """A σ table, lowest first."""

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]


class ModelSamplingDiscrete(_Table):
    """SD's schedule: β = linspace(√0.00085, √0.012, 1000)² in float64, σ = √((1 − ᾱ)/ᾱ) stored in
    float32; a σ maps to the timestep of the nearest table entry in log σ."""

    def __init__(self, linear_start=0.00085, linear_end=0.012, timesteps=1000):
        betas = torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sigmas = (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()
        self.log_sigmas = self.sigmas.log()
        self.sigma_data = 1.0

    def timestep(self, sigma):
        distances = sigma.log()[None] - self.log_sigmas[:, None]
        return distances.abs().argmin(dim=0).view(sigma.shape)


class ModelSamplingDiscreteFlow(_Table):
    """A flow model's σ in (0, 1]: timestep t/1000 for t = 1..1000 (shift 1); the timestep is 1000·σ."""

    def __init__(self, timesteps=1000, multiplier=1000):
        self.multiplier = multiplier
        self.sigmas = (torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier / multiplier  # ComfyUI's rounding
        self.sigma_data = 1.0

    def timestep(self, sigma):
        return sigma * self.multiplier
