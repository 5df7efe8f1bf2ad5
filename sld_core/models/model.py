"""`Model`: an ε-prediction UNet plus its noise schedule, seen by samplers as a k-diffusion denoiser."""
import torch

from ..acceleration import ExecutionOptions, UNetRunner
from ..model_sampling import DiscreteSchedule

SD1_LATENT_SCALE = 0.18215


class Model:
    """SD1.x UNet wrapped for σ-space sampling (ComfyUI's ``BaseModel`` with ``EPS`` sampling).

    Samplers work on x = model-space latent + σ·noise. The UNet sees ``x/√(σ²+1)`` at the timestep
    nearest to σ and predicts ε; ``denoise`` returns x̂₀ = x − σ·ε. LATENT dicts hold the VAE's unscaled
    latent, so `process_latent_in/out` apply the VAE scale factor on the way in and out.
    """

    def __init__(self, unet, schedule=None, latent_scale=SD1_LATENT_SCALE, prediction_type="epsilon"):
        if prediction_type != "epsilon":
            raise ValueError(f"only epsilon-prediction SD1.x models are supported, got {prediction_type!r}")
        self.unet = unet
        self.schedule = schedule or DiscreteSchedule()
        self.latent_scale = latent_scale
        self.runner = UNetRunner(unet)

    @property
    def execution(self):
        """How the UNet is run (`acceleration.ExecutionOptions`)."""
        return self.runner.options

    def set_execution(self, options):
        """Run the UNet as `options` say (channels-last, CUDA graphs, torch.compile); see `acceleration`."""
        if options != self.runner.options:
            self.runner = UNetRunner(self.unet, options)
        return self

    @property
    def device(self):
        return next(self.unet.parameters()).device

    @property
    def dtype(self):
        return next(self.unet.parameters()).dtype

    @property
    def in_channels(self):
        return self.unet.config.in_channels

    def to(self, device=None, dtype=None):
        self.unet.to(device=device, dtype=dtype)
        self.runner = UNetRunner(self.unet, self.runner.options)  # captured graphs hold the old tensors
        return self

    def process_latent_in(self, latent):
        return latent * self.latent_scale

    def process_latent_out(self, latent):
        return latent / self.latent_scale

    @torch.no_grad()
    def predict_eps(self, x, sigma, context):
        """ε prediction (float32) for x at noise level σ (shape [B]) with text embeddings `context`
        ([B, tokens, dim]); one UNet call for the whole batch."""
        sigma = sigma.to(x.device, torch.float32)
        scale_in = ((sigma**2 + 1.0) ** 0.5).view(-1, *([1] * (x.ndim - 1)))
        timestep = self.schedule.timestep(sigma).float()
        eps = self.runner((x / scale_in).to(self.dtype), timestep, context.to(x.device, self.dtype))
        return eps.float()

    def denoise(self, x, sigma, context):
        """x̂₀ = x − σ·ε(x, σ): the k-diffusion denoiser interface."""
        eps = self.predict_eps(x, sigma, context)
        return x - eps * sigma.to(x.device, torch.float32).view(-1, *([1] * (x.ndim - 1)))
