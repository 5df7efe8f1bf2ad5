"""`Model`: a UNet plus its model sampling (noise schedule and prediction type), seen by samplers as a
k-diffusion denoiser."""
import torch

from ..acceleration import UNetRunner
from ..model_sampling import DiscreteSchedule

SD1_LATENT_SCALE = 0.18215


class Model:
    """An SD UNet wrapped for σ-space sampling (ComfyUI's ``BaseModel`` with its ``model_sampling``).

    Samplers work on x = model-space latent + σ·noise. The UNet sees ``x/√(σ²+1)`` at the timestep
    nearest to σ; what its output means (ε or v) is the schedule's ``prediction_type``. ``denoise``
    returns x̂₀ and ``predict_eps`` the ε the output implies, ε = (x − x̂₀)/σ, which is what CFG and SLD
    combine (`model_sampling`). LATENT dicts hold the VAE's unscaled latent, so
    `process_latent_in/out` apply the VAE scale factor on the way in and out.

    ``prediction_type`` (optional) overrides the schedule's, keeping its β schedule.
    ``added_conditioning``: "" (SD1/SD2), "sdxl" or "refiner" — SDXL UNets also take each
    conditioning's pooled output and size numbers (`sdxl_conditioning`); default "sdxl" for a UNet
    with diffusers' ``text_time`` embedding.
    """

    # Where it was loaded from (`checkpoint.load_checkpoint` sets them), for errors that name it.
    checkpoint = None  # the file or folder name
    family = None  # families.FAMILIES key

    def __init__(self, unet, schedule=None, latent_scale=SD1_LATENT_SCALE, prediction_type=None,
                 added_conditioning=None):
        schedule = schedule or DiscreteSchedule()
        if prediction_type is not None and prediction_type != schedule.prediction_type:
            schedule = schedule.with_sampling(prediction_type, schedule.zsnr)
        if added_conditioning is None:
            text_time = getattr(getattr(unet, "config", None), "addition_embed_type", None) == "text_time"
            added_conditioning = "sdxl" if text_time else ""
        self.unet = unet
        self.schedule = schedule
        self.latent_scale = latent_scale
        self.added_conditioning = added_conditioning
        self.runner = UNetRunner(unet)

    @property
    def prediction_type(self):
        return self.schedule.prediction_type

    def with_sampling(self, prediction_type, zsnr=False):
        """A model sharing this one's UNet whose output is read as ``prediction_type`` ("epsilon"/"eps"
        or "v_prediction"), optionally with zero-terminal-SNR: ComfyUI's ModelSamplingDiscrete node.
        This model is left as it is."""
        clone = Model.__new__(Model)
        clone.__dict__.update(self.__dict__)
        clone.schedule = self.schedule.with_sampling(prediction_type, zsnr)
        return clone

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

    def added_inputs(self, extras, prompt_types, batch, latent_shape):
        """SDXL's added UNet inputs for conditionings batched as `guiders.batch_contexts` batches them
        (each of `extras` — their CONDITIONING extra dicts — repeated `batch` times), as the tuple
        (text_embeds, time_ids) on the model's device and dtype; () for SD1/SD2. ``prompt_types``:
        ComfyUI's "positive"/"negative" per conditioning (the refiner's aesthetic-score default)."""
        if not self.added_conditioning:
            return ()
        from .sdxl_conditioning import added_cond_kwargs

        kind = self.added_conditioning
        per = [added_cond_kwargs(e, latent_shape, kind, t, batch) for e, t in zip(extras, prompt_types)]
        return tuple(torch.cat([p[k] for p in per]).to(self.device, self.dtype) for k in ("text_embeds", "time_ids"))

    @torch.no_grad()
    def _output(self, x, sigma, context):
        """The UNet's raw output (float32) for x at noise level σ (shape [B]) with text embeddings
        `context` ([B, tokens, dim], or (embeddings, added inputs) for SDXL); one UNet call for the
        whole batch."""
        context, added = context if isinstance(context, tuple) else (context, ())
        if self.added_conditioning and not added:
            raise ValueError("an SDXL model needs each conditioning's pooled output and sizes (Model.added_inputs)")
        sigma = sigma.to(x.device, torch.float32)
        scale_in = ((sigma**2 + 1.0) ** 0.5).view(-1, *([1] * (x.ndim - 1)))
        timestep = self.schedule.timestep(sigma).float()
        out = self.runner((x / scale_in).to(self.dtype), timestep, context.to(x.device, self.dtype), added)
        return out.float()

    def predict_eps(self, x, sigma, context):
        """ε (float32) for x at noise level σ: the UNet's output for ε models, (x − x̂₀)/σ for v models."""
        return self.schedule.eps(x, sigma.to(x.device, torch.float32), self._output(x, sigma, context))

    def denoise(self, x, sigma, context):
        """x̂₀ = x − σ·ε(x, σ): the k-diffusion denoiser interface. Through `predict_eps`, the one place a
        UNet call happens; for v models this equals x/(σ²+1) − v·σ/√(σ²+1) (ComfyUI's V_PREDICTION)."""
        eps = self.predict_eps(x, sigma, context)
        return x - eps * sigma.to(x.device, torch.float32).view(-1, *([1] * (x.ndim - 1)))
