"""Samplers: `SLDKSampler` and `SLDKSamplerAdvanced` (KSampler and KSamplerAdvanced plus Safe Latent
Diffusion) and, for headless mode, ComfyUI's `KSampler`. Each is one call to `sld_core.ksample`
(inside ComfyUI, on its own MODEL, to the bridge's `ksample_native`)."""
from ..sld_core.sampling_names import SAMPLER_NAMES, SCHEDULER_NAMES
from .compatibility import check_conditionings
from .context import in_comfyui, step_callback
from .errors import NodeInputError
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


def advanced_inputs():
    """KSamplerAdvanced's inputs, ComfyUI's names, order, defaults and ranges (a step range of the
    schedule for ``steps``: start_at_step ≤ step < end_at_step)."""
    inputs = ksampler_inputs()
    return {
        "model": inputs["model"],
        "add_noise": (["enable", "disable"], {"tooltip": "disable: the latent already holds its noise (an earlier "
                                                         "sampler's leftover noise)."}),
        "noise_seed": inputs["seed"],
        **{name: inputs[name] for name in ("steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                                           "latent_image")},
        "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000,
                                  "tooltip": "The first step to run, counted in the schedule of steps steps."}),
        "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000,
                                "tooltip": "The step to stop before; past steps runs to the end."}),
        "return_with_leftover_noise": (["disable", "enable"], {"tooltip": "enable: stop at end_at_step's noise "
                                                                          "level, for a next sampler to finish."}),
    }


def empty_step_range(steps, start_at_step, end_at_step):
    """(input name, message) when a KSamplerAdvanced step range holds no step (ComfyUI then returns
    the latent untouched), else None. Values that are not ints yet (links) are not judged."""
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (steps, start_at_step, end_at_step)):
        return None
    last, name = (steps, "steps") if steps <= end_at_step else (end_at_step, "end_at_step")
    if start_at_step < last:
        return None
    return ("start_at_step", f"start_at_step {start_at_step} is not below {name} {last}: no step to run")


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


class SLDKSamplerAdvanced:
    """KSamplerAdvanced with Safe Latent Diffusion: a step range of the schedule (a base and refiner
    pair, a split run).

    Split runs: warm-up counts steps of the whole `steps` schedule (start_at_step 10 with warm-up 7
    guides from its first step), and the momentum starts at zero in each node: nothing passes
    between nodes. So a split run equals the unsplit one when the momentum scale is 0, and otherwise
    differs only by the momentum the second node has not built up yet. A range with no step
    (start_at_step ≥ steps or ≥ end_at_step) is an error here, where ComfyUI's KSamplerAdvanced
    silently returns the input latent.
    """

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**advanced_inputs(), **sld_inputs()}}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The latent after the step range (with leftover noise if asked for).",)
    FUNCTION = "sample"
    CATEGORY = "SLD/sampling"
    DESCRIPTION = (
        "KSampler Advanced with Safe Latent Diffusion: runs steps start_at_step to end_at_step of the schedule, "
        "steering away from the safety concept. SLD's warm-up counts steps of the whole schedule; its momentum starts "
        "at zero in each node. A step range with no step is an error. Preset disabled gives exactly "
        "KSamplerAdvanced's result."
    )

    def sample(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
               latent_image, start_at_step, end_at_step, return_with_leftover_noise, safety_concept, sld_preset,
               sld_guidance_scale, sld_warmup_steps, sld_threshold, sld_momentum_scale, sld_momentum_beta):
        problem = empty_step_range(steps, start_at_step, end_at_step)
        if problem:
            raise NodeInputError(*problem)
        params = params_from_inputs(sld_preset, sld_guidance_scale, sld_warmup_steps, sld_threshold,
                                    sld_momentum_scale, sld_momentum_beta)
        advanced = dict(add_noise=add_noise == "enable", start_step=start_at_step, last_step=end_at_step,
                        force_full_denoise=return_with_leftover_noise != "enable")
        from ..sld_core.ksample import ksample
        from ..sld_core.models.model import Model

        if in_comfyui() and not isinstance(model, Model):
            from .comfy_bridge import ksample_native

            return (ksample_native(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                   latent_image, 1.0, safety_concept, params, **advanced),)
        check_conditionings(model, positive=positive, negative=negative, safety_concept=safety_concept)
        latent = ksample(model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                         safety_concept=safety_concept, sld_params=params, callback=step_callback(),
                         disable_pbar=True, **advanced)
        return (latent,)
