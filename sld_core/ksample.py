"""`ksample`: ComfyUI's KSampler as one function, with optional Safe Latent Diffusion.

Glue between a LATENT and a sampler: sigmas for (scheduler, steps, denoise), the seed's noise, the
start latent, the guider, and the way back to the VAE's unscaled latent space. Same inputs, same
seed, same model → the same latent as ComfyUI's KSampler (and, with SLD, as diffusers' safe pipeline).
"""
import torch

from .errors import InvalidInputError
from .guiders import CFGGuider, SLDGuider
from .inpaint import MaskedDenoiser, latent_mask
from .latent_batch import check_samples
from .noise import NoNoise, RandomNoise
from .samplers import get_sampler
from .schedules import advanced_sigmas, ksampler_sigmas


def check_latent(latent, model):
    """Validate a LATENT dict against the model; returns its samples tensor."""
    samples = check_samples(latent, "latent_image")
    if samples.shape[1] != model.in_channels:
        raise InvalidInputError(
            f"latent_image: the model expects {model.in_channels} latent channels, got {samples.shape[1]} "
            f"(shape {tuple(samples.shape)})"
        )
    return samples


def ksample(
    model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
    safety_concept=None, sld_params=None, callback=None, disable_pbar=False,
    add_noise=True, start_step=None, last_step=None, force_full_denoise=True,
):
    """Sample a LATENT; SLD is used when `sld_params` and `safety_concept` are given.

    The last four arguments are ``KSamplerAdvanced``'s (ComfyUI's ``common_ksampler``): without
    ``add_noise`` the latent is used as is (it already holds noise from an earlier run); the σ
    schedule for ``steps`` is cut to end at step ``last_step`` (its last σ set to 0 when
    ``force_full_denoise``, i.e. no leftover noise) and to begin at ``start_step``. A start at or
    past the end returns the input latent untouched. SLD counts its steps (warm-up) in the whole
    schedule, from step 0, and starts its momentum at zero (`guiders.SLDRun`'s ``step_offset``).

    `callback(i, denoised, x, total_steps)` is called after each step, as ComfyUI's KSampler callback.
    Returns a new LATENT dict (samples on the CPU, unscaled), keeping `batch_index` if present.
    """
    check_latent(latent_image, model)
    sampler = get_sampler(sampler_name)
    sigmas = ksampler_sigmas(model.schedule, sampler_name, scheduler, steps, denoise)
    sigmas = advanced_sigmas(sigmas, start_step, last_step, force_full_denoise)
    if sigmas is None:
        return dict(latent_image)

    noise = RandomNoise(seed) if add_noise else NoNoise()
    if sld_params is not None and safety_concept is not None:
        guider = SLDGuider(model, positive, negative, safety_concept, cfg, sld_params, step_offset=start_step or 0)
    else:
        guider = CFGGuider(model, positive, negative, cfg)
    output, _ = sample_with_guider(guider, sampler, sigmas, latent_image, noise, seed, callback, disable_pbar,
                                   fresh_inpaint_noise=sampler_name == "ddim")
    return output


def sample_with_guider(guider, sampler, sigmas, latent_image, noise, seed, callback=None, disable_pbar=False,
                       fresh_inpaint_noise=False):
    """Run ``sampler`` (a `samplers` function) with ``guider`` over ``sigmas`` from ``latent_image``
    plus the noise ``noise`` (a NOISE value: `noise.RandomNoise`, `noise.NoNoise`) draws for it, scaled
    to the first σ: ComfyUI's ``guider.sample``, what ``SamplerCustomAdvanced`` does and every KSampler
    ends in. ``seed`` seeds the noise a stochastic sampler adds. Nothing is drawn when nothing runs.

    A LATENT with a ``noise_mask`` is inpainted (`inpaint.MaskedDenoiser` wraps the guider): only
    where the mask is 1 is repainted. The kept region is re-noised with the start noise, or with
    ``fresh_inpaint_noise`` a new draw from ``seed + 1`` (ComfyUI's "ddim" sampler does that).

    Returns (output, denoised_output) LATENT dicts: the sampled latent and the model's x̂₀ at the last
    step (``SamplerCustom``'s two outputs; both the input when ``sigmas`` is empty).
    """
    model = guider.model
    samples = check_latent(latent_image, model)
    output = dict(latent_image)
    if len(sigmas) == 0:  # ComfyUI returns the input untouched
        return output, output

    device = model.device
    start = model.process_latent_in(samples.to(device, torch.float32))
    drawn = noise.generate_noise(latent_image).to(device, torch.float32)
    x = model.schedule.noise_scaling(sigmas[0], drawn, start)
    sigmas = sigmas.to(device, torch.float32)
    guider.prepare(sigmas)
    denoiser = guider
    if latent_image.get("noise_mask") is not None:
        mask = latent_mask(latent_image["noise_mask"], x.shape).to(device)
        if fresh_inpaint_noise:
            drawn = torch.randn(x.shape, generator=torch.manual_seed(seed + 1)).to(device)
        denoiser = MaskedDenoiser(guider, mask, start, drawn)

    total = len(sigmas) - 1
    last = {}

    def k_callback(info):
        last["denoised"] = info["denoised"]
        if callback is not None:
            callback(info["i"], info["denoised"], info["x"], total)

    with torch.inference_mode():
        result = sampler(denoiser, x, sigmas, extra_args={"seed": seed}, callback=k_callback, disable=disable_pbar)
    output["samples"] = model.process_latent_out(result).float().cpu()
    denoised = dict(output)
    if "denoised" in last:
        denoised["samples"] = model.process_latent_out(last["denoised"]).float().cpu()
    return output, denoised
