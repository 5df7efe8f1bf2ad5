"""Stand-in for comfy/model_base.py and model_sampling.py: a model as guiders and samplers see it."""
import torch


class ModelSamplingEPS:
    """The noise of an ε model in σ-space: x = latent + σ·noise, or √(1+σ²)·noise at full denoise."""

    def __init__(self, sigma_min, sigma_max):
        self.sigma_min = torch.tensor(float(sigma_min))
        self.sigma_max = torch.tensor(float(sigma_max))

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = torch.as_tensor(sigma, dtype=noise.dtype)
        return noise * ((1.0 + sigma**2).sqrt() if max_denoise else sigma) + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class LatentFormat:
    def __init__(self, latent_channels=4, scale_factor=0.18215):
        self.latent_channels = latent_channels
        self.scale_factor = scale_factor


class BaseModel:
    """`apply_model(x, σ, c_crossattn=...)` returns the denoised estimate x̂₀, as ComfyUI's models do
    whatever they predict; `denoise(x, sigma, context)` is the real network behind it."""

    def __init__(self, denoise, sigma_min, sigma_max, latent_format=None):
        self.denoise = denoise
        self.model_sampling = ModelSamplingEPS(sigma_min, sigma_max)
        self.latent_format = latent_format or LatentFormat()

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **kwargs):
        return self.denoise(x, t, c_crossattn)

    def process_latent_in(self, latent):
        return latent * self.latent_format.scale_factor

    def process_latent_out(self, latent):
        return latent / self.latent_format.scale_factor
