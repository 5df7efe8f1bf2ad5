"""Composable sampling: ComfyUI's ``KSamplerAdvanced`` and its custom-sampling blocks (noise, guider,
sampler and sigmas as separate nodes, joined by ``SamplerCustom``/``SamplerCustomAdvanced``), for
headless mode, plus `SLDGuider`, which works headless and on ComfyUI's own MODEL.

The values between them are sld_core's: a NOISE is `noise.RandomNoise`/`noise.NoNoise`, a GUIDER a
`guiders` guider, a SAMPLER a `samplers` function, SIGMAS a 1-D float tensor ending in 0.
"""
import logging

from ..sld_core.sampling_names import SAMPLER_NAMES, SCHEDULER_NAMES
from .compatibility import check_conditionings
from .context import in_comfyui, step_callback
from .sampling import advanced_inputs, empty_step_range
from .sld_inputs import params_from_inputs, sld_inputs

log = logging.getLogger(__name__)

_SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True})
_CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})
_SCHEDULERS_CATEGORY = "sampling/custom_sampling/schedulers"


class KSamplerAdvanced:
    """ComfyUI's core KSamplerAdvanced (headless only): a KSampler run over a slice of the schedule.
    A slice with no step returns the input latent, as ComfyUI does (said in a log line)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": advanced_inputs()}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"
    CATEGORY = "sampling"

    def sample(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
               latent_image, start_at_step, end_at_step, return_with_leftover_noise, denoise=1.0):
        from ..sld_core.ksample import ksample

        check_conditionings(model, positive=positive, negative=negative)
        problem = empty_step_range(steps, start_at_step, end_at_step)
        if problem:
            log.info("KSamplerAdvanced: %s; the latent passes through unchanged (as in ComfyUI)", problem[1])
        latent = ksample(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                         denoise=denoise, add_noise=add_noise == "enable", start_step=start_at_step,
                         last_step=end_at_step, force_full_denoise=return_with_leftover_noise != "enable",
                         callback=step_callback(), disable_pbar=True)
        return (latent,)


class SamplerCustom:
    """ComfyUI's SamplerCustom (headless only): CFG sampling with a SAMPLER and SIGMAS from other nodes."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "add_noise": ("BOOLEAN", {"default": True}), "noise_seed": _SEED, "cfg": _CFG,
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "sampler": ("SAMPLER",),
            "sigmas": ("SIGMAS",), "latent_image": ("LATENT",),
        }}

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"
    CATEGORY = "sampling/custom_sampling"

    def sample(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        from ..sld_core.guiders import CFGGuider
        from ..sld_core.noise import NoNoise, RandomNoise

        check_conditionings(model, positive=positive, negative=negative)
        noise = RandomNoise(noise_seed) if add_noise else NoNoise()
        return _sample(noise, CFGGuider(model, positive, negative, cfg), sampler, sigmas, latent_image, noise_seed)


class SamplerCustomAdvanced:
    """ComfyUI's SamplerCustomAdvanced (headless only): NOISE, GUIDER, SAMPLER and SIGMAS joined."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                             "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}}

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"
    CATEGORY = "sampling/custom_sampling"

    def sample(self, noise, guider, sampler, sigmas, latent_image):
        return _sample(noise, guider, sampler, sigmas, latent_image, noise.seed)


def _sample(noise, guider, sampler, sigmas, latent_image, seed):
    from ..sld_core.ksample import sample_with_guider

    return sample_with_guider(guider, sampler, sigmas, latent_image, noise, seed, step_callback(), disable_pbar=True)


class KSamplerSelect:
    """ComfyUI's KSamplerSelect (headless only): a SAMPLER by name."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler_name": (list(SAMPLER_NAMES),)}}

    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = "sampling/custom_sampling/samplers"

    def get_sampler(self, sampler_name):
        from ..sld_core.samplers import get_sampler

        return (get_sampler(sampler_name),)


class BasicScheduler:
    """ComfyUI's BasicScheduler (headless only): the SIGMAS of a named schedule for the model."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "scheduler": (list(SCHEDULER_NAMES),),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = _SCHEDULERS_CATEGORY

    def get_sigmas(self, model, scheduler, steps, denoise):
        from ..sld_core.schedules import scheduler_sigmas

        return (scheduler_sigmas(model.schedule, scheduler, steps, denoise),)


class KarrasScheduler:
    """ComfyUI's KarrasScheduler (headless only): Karras et al.'s σ spacing between two given σ."""

    @classmethod
    def INPUT_TYPES(cls):
        def sigma(default):
            return ("FLOAT", {"default": default, "min": 0.0, "max": 5000.0, "step": 0.01, "round": False})

        return {"required": {
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "sigma_max": sigma(14.614642), "sigma_min": sigma(0.0291675),
            "rho": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.01, "round": False}),
        }}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = _SCHEDULERS_CATEGORY

    def get_sigmas(self, steps, sigma_max, sigma_min, rho):
        from ..sld_core.schedules import karras_sigmas

        return (karras_sigmas(steps, sigma_min, sigma_max, rho),)


class SDTurboScheduler:
    """ComfyUI's SDTurboScheduler (headless only): SD-Turbo's 1–10 step schedule."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "steps": ("INT", {"default": 1, "min": 1, "max": 10}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0, "max": 1.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = _SCHEDULERS_CATEGORY

    def get_sigmas(self, model, steps, denoise):
        from ..sld_core.schedules import sd_turbo

        return (sd_turbo(model.schedule, steps, denoise),)


class SplitSigmas:
    """ComfyUI's SplitSigmas (headless only): the schedule up to and from step ``step`` (both keep it)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",), "step": ("INT", {"default": 0, "min": 0, "max": 10000})}}

    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/sigmas"

    def get_sigmas(self, sigmas, step):
        return (sigmas[:step + 1], sigmas[step:])


class RandomNoise:
    """ComfyUI's RandomNoise (headless only): the seeded start noise, as KSampler draws it."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise_seed": _SEED}}

    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    CATEGORY = "sampling/custom_sampling/noise"

    def get_noise(self, noise_seed):
        from ..sld_core.noise import RandomNoise as Noise

        return (Noise(noise_seed),)


class DisableNoise:
    """ComfyUI's DisableNoise (headless only): no start noise (the latent already holds it)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    CATEGORY = "sampling/custom_sampling/noise"

    def get_noise(self):
        from ..sld_core.noise import NoNoise

        return (NoNoise(),)


class CFGGuider:
    """ComfyUI's CFGGuider (headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": _CFG}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "sampling/custom_sampling/guiders"

    def get_guider(self, model, positive, negative, cfg):
        from ..sld_core import guiders

        check_conditionings(model, positive=positive, negative=negative)
        return (guiders.CFGGuider(model, positive, negative, cfg),)


class BasicGuider:
    """ComfyUI's BasicGuider (headless only): one conditioning, no CFG."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = "sampling/custom_sampling/guiders"

    def get_guider(self, model, conditioning):
        from ..sld_core import guiders

        check_conditionings(model, conditioning=conditioning)
        return (guiders.BasicGuider(model, conditioning),)


class SLDGuider:
    """SLD as a GUIDER for SamplerCustomAdvanced (noise, sampler and sigmas from their nodes)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model used for denoising."}),
                "positive": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to include in the image."}),
                "negative": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to exclude from the image."}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "The Classifier-Free Guidance scale; SLD acts only when it is above 1."}),
                **sld_inputs(),
            }
        }

    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("A guider applying CFG and Safe Latent Diffusion, for SamplerCustomAdvanced.",)
    FUNCTION = "get_guider"
    CATEGORY = "SLD/sampling"
    DESCRIPTION = (
        "CFG with Safe Latent Diffusion as a guider for SamplerCustomAdvanced: one batched model call for the "
        "positive, negative and safety-concept conditioning per evaluation. Preset disabled is ComfyUI's CFGGuider. "
        "Warm-up and momentum start again with each sampling run (each SamplerCustomAdvanced)."
    )

    def get_guider(self, model, positive, negative, cfg, safety_concept, sld_preset, sld_guidance_scale,
                   sld_warmup_steps, sld_threshold, sld_momentum_scale, sld_momentum_beta):
        params = params_from_inputs(sld_preset, sld_guidance_scale, sld_warmup_steps, sld_threshold,
                                    sld_momentum_scale, sld_momentum_beta)
        from ..sld_core import guiders
        from ..sld_core.models.model import Model

        if in_comfyui() and not isinstance(model, Model):
            from .comfy_bridge import make_guider

            return (make_guider(model, positive, negative, safety_concept, cfg, params),)
        check_conditionings(model, positive=positive, negative=negative, safety_concept=safety_concept)
        return (guiders.SLDGuider(model, positive, negative, safety_concept, cfg, params),)
