"""Stand-in for comfy/model_base.py: a model as guiders and samplers see it.

`apply_model(x, σ, c_crossattn=..., y=...)` returns the denoised estimate x̂₀ whatever the network
predicts: the network sees `model_sampling.calculate_input(σ, x)` at `model_sampling.timestep(σ)` and
its output is read by `model_sampling.calculate_denoised`. `extra_conds` turns one conditioning entry
(its tensor and extra keys, plus the sampling run's noise, device and prompt type) into the model's
inputs: `c_crossattn`, and `y` where `encode_adm` gives one (SDXL: the pooled output and six size
embeddings). The network is any callable `diffusion_model(xc, t, context=..., y=...)`.
"""
import math

import torch

from . import model_sampling as sampling


class LatentFormat:
    def __init__(self, latent_channels=4, scale_factor=0.18215):
        self.latent_channels = latent_channels
        self.scale_factor = scale_factor


def make_sampling(table, prediction):
    """A `model_sampling` object: a σ table class and a prediction class of `model_sampling`, combined
    into a class made here (so its own module is this one, as in ComfyUI)."""

    class ModelSampling(table, prediction):
        pass

    return ModelSampling()


def timestep_embedding(t, dim=256, max_period=10000):
    """[cos(t·f), sin(t·f)] for f = max_period^(−i/(dim/2)), i < dim/2 (ComfyUI's `Timestep` embedder)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class BaseModel:
    def __init__(self, diffusion_model, model_sampling=None, latent_format=None):
        self.diffusion_model = diffusion_model
        self.model_sampling = model_sampling or make_sampling(sampling.ModelSamplingDiscrete, sampling.EPS)
        self.latent_format = latent_format or LatentFormat()

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, **extra_conds):
        sigma = t
        xc = self.model_sampling.calculate_input(sigma, x)
        timestep = self.model_sampling.timestep(sigma).float()
        output = self.diffusion_model(xc, timestep, context=c_crossattn, **extra_conds).float()
        return self.model_sampling.calculate_denoised(sigma, output, x)

    def encode_adm(self, **kwargs):
        return None

    def extra_conds(self, **kwargs):
        out = {}
        adm = self.encode_adm(**kwargs)
        if adm is not None:
            out["y"] = adm
        if kwargs.get("cross_attn") is not None:
            out["c_crossattn"] = kwargs["cross_attn"]
        return out

    def process_latent_in(self, latent):
        return latent * self.latent_format.scale_factor

    def process_latent_out(self, latent):
        return latent / self.latent_format.scale_factor


class SDXL(BaseModel):
    """SDXL base: `y` = [pooled output, embeddings of height, width, crop_h, crop_w, target_height,
    target_width]; sizes default to 768 here, but a sampling run always passes the latent's (×8)."""

    def __init__(self, diffusion_model, model_sampling=None):
        super().__init__(diffusion_model, model_sampling, LatentFormat(scale_factor=0.13025))

    def encode_adm(self, **kwargs):
        pooled = kwargs["pooled_output"]
        width, height = kwargs.get("width", 768), kwargs.get("height", 768)
        numbers = [height, width, kwargs.get("crop_h", 0), kwargs.get("crop_w", 0),
                   kwargs.get("target_height", height), kwargs.get("target_width", width)]
        flat = torch.cat([timestep_embedding(torch.tensor([float(n)])) for n in numbers]).flatten()
        return torch.cat([pooled, flat[None].repeat(pooled.shape[0], 1)], dim=1)


class Flux(BaseModel):
    """A flow-matching model (ComfyUI's model type FLUX: CONST prediction over a flow σ table)."""

    def __init__(self, diffusion_model):
        super().__init__(diffusion_model, make_sampling(sampling.ModelSamplingDiscreteFlow, sampling.CONST),
                         LatentFormat(latent_channels=16, scale_factor=0.3611))
