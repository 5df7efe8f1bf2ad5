"""`ksample`: ComfyUI's KSampler as one function, with optional Safe Latent Diffusion.

Glue between a LATENT and a sampler: sigmas for (scheduler, steps, denoise), the seed's noise, the
start latent, the guider, and the way back to the VAE's unscaled latent space. Same inputs, same
seed, same model → the same latent as ComfyUI's KSampler (and, with SLD, as diffusers' safe pipeline).
"""
import torch

from .errors import InvalidInputError
from .guiders import CFGGuider, SLDGuider
from .noise import prepare_noise
from .samplers import get_sampler
from .schedules import ksampler_sigmas


def check_latent(latent, model):
    """Validate a LATENT dict against the model; returns its samples tensor."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not torch.is_tensor(samples) or samples.ndim != 4:
        got = getattr(samples, "shape", type(latent).__name__)
        raise InvalidInputError(f"latent_image: expected a LATENT {{'samples': Tensor[B,C,H,W]}}, got {got}")
    if samples.shape[1] != model.in_channels:
        raise InvalidInputError(
            f"latent_image: the model expects {model.in_channels} latent channels, got {samples.shape[1]} "
            f"(shape {tuple(samples.shape)})"
        )
    return samples


def ksample(
    model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
    safety_concept=None, sld_params=None, callback=None, disable_pbar=False,
):
    """Sample a LATENT; SLD is used when `sld_params` and `safety_concept` are given.

    `callback(i, denoised, x, total_steps)` is called after each step, as ComfyUI's KSampler callback.
    Returns a new LATENT dict (samples on the CPU, unscaled), keeping `batch_index` if present.
    """
    samples = check_latent(latent_image, model)
    sampler = get_sampler(sampler_name)
    sigmas = ksampler_sigmas(model.schedule, sampler_name, scheduler, steps, denoise)
    out = dict(latent_image)
    if len(sigmas) == 0:  # denoise 0: ComfyUI returns the input untouched
        return out

    noise = prepare_noise(samples, seed, latent_image.get("batch_index"))
    device = model.device
    start = model.process_latent_in(samples.to(device, torch.float32))
    x = model.schedule.noise_scaling(sigmas[0], noise.to(device, torch.float32), start)

    if sld_params is not None and safety_concept is not None:
        guider = SLDGuider(model, positive, negative, safety_concept, cfg, sld_params)
    else:
        guider = CFGGuider(model, positive, negative, cfg)
    sigmas = sigmas.to(device)
    guider.prepare(sigmas)

    k_callback = None
    if callback is not None:
        total = len(sigmas) - 1
        k_callback = lambda info: callback(info["i"], info["denoised"], info["x"], total)  # noqa: E731
    with torch.inference_mode():
        result = sampler(guider, x, sigmas, extra_args={"seed": seed}, callback=k_callback, disable=disable_pbar)
    out["samples"] = model.process_latent_out(result).float().cpu()
    return out
