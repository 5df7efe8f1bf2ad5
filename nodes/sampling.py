"""Samplers: `SLDKSampler` (KSampler plus Safe Latent Diffusion) and, for headless mode, ComfyUI's
`KSampler`. Both are one call to `sld_core.ksample`."""
from ..sld_core.sampling_names import SAMPLER_NAMES, SCHEDULER_NAMES
from .compatibility import check_conditionings
from .context import in_comfyui, step_callback
from .sld_inputs import params_from_inputs, sld_inputs


def sampler_lists():
    """(sampler names, scheduler names): ComfyUI's own lists inside ComfyUI, else sld_core's."""
    if in_comfyui():
        from .comfy_bridge import sampler_names, scheduler_names

        return sampler_names(), scheduler_names()
    return list(SAMPLER_NAMES), list(SCHEDULER_NAMES)


def ksampler_inputs():
    """KSampler's inputs: ComfyUI's names, order, defaults and ranges (sampler lists: the host's)."""
    samplers, schedulers = sampler_lists()
    return {
        "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                         "tooltip": "The random seed used for creating the noise."}),
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of steps used in the denoising process."}),
        "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "The Classifier-Free Guidance scale: higher values follow the prompt more closely."}),
        "sampler_name": (samplers, {"tooltip": "The algorithm used when sampling."}),
        "scheduler": (schedulers, {"tooltip": "The scheduler controls how noise is gradually removed to form the image."}),
        "positive": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to include in the image."}),
        "negative": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes you want to exclude from the image."}),
        "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "The amount of denoising applied; lower values keep the structure of the input (image to image)."}),
    }


class KSampler:
    """ComfyUI's core KSampler (headless only; inside ComfyUI its own is used)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": ksampler_inputs()}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"
    CATEGORY = "sampling"
    DESCRIPTION = "Uses the provided model, positive and negative conditioning to denoise the latent image."

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0):
        from ..sld_core.ksample import ksample

        check_conditionings(model, positive=positive, negative=negative)
        latent = ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                         denoise=denoise, callback=step_callback(), disable_pbar=True)
        return (latent,)


class SLDKSampler:
    """KSampler with Safe Latent Diffusion: guides the image away from the safety concept."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**ksampler_inputs(), **sld_inputs()}}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"
    CATEGORY = "SLD/sampling"
    DESCRIPTION = (
        "KSampler with Safe Latent Diffusion (Schramowski et al., CVPR 2023): every step also predicts the "
        "noise for the safety concept and steers away from it where the prompt is close to it. "
        "Preset disabled gives exactly KSampler's result."
    )

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
               denoise, safety_concept, sld_preset, sld_guidance_scale, sld_warmup_steps, sld_threshold,
               sld_momentum_scale, sld_momentum_beta):
        params = params_from_inputs(sld_preset, sld_guidance_scale, sld_warmup_steps, sld_threshold,
                                    sld_momentum_scale, sld_momentum_beta)
        from ..sld_core.ksample import ksample
        from ..sld_core.models.model import Model

        if in_comfyui() and not isinstance(model, Model):
            # ComfyUI's MODEL (from its own loaders, LoRAs, patches): sample with ComfyUI's machinery.
            from .comfy_bridge import ksample_native

            return (ksample_native(model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                   latent_image, denoise, safety_concept, params),)
        check_conditionings(model, positive=positive, negative=negative, safety_concept=safety_concept)
        latent = ksample(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                         denoise=denoise, safety_concept=safety_concept, sld_params=params,
                         callback=step_callback(), disable_pbar=True)
        return (latent,)
