"""SLD on ComfyUI's native MODEL and CLIP, sampled by ComfyUI's own machinery.

Imported only when ComfyUI is the host (it imports `comfy.*` at module level). Everything ComfyUI
does around a sampling run stays ComfyUI's: sigmas (`comfy.samplers.KSampler`), samplers
(`sampler_object`), the seed's noise (`comfy.sample.prepare_noise`), model patches and LoRAs,
ControlNet and area conditioning (`calc_cond_batch`), previews, the progress bar and interrupts. What
is ours is one guider, `SLDComfyGuider`, whose `predict_noise` evaluates [positive, negative, safety
concept] in one batched call and combines them with `sld_core.guidance` (through `SLDRun`, the same
step/momentum rule as the headless guider).

ε from x̂₀, for every model type: ComfyUI's models return the denoised estimate x̂₀ whatever they
were trained to predict (ε, v, x₀), so ε = (x − x̂₀)/σ is the noise the model implies in its own σ
parameterisation. For an ε-model it is exactly the UNet's ε (up to float rounding); for a
v-prediction model it is the ε implied by its v, which is what diffusers' safe pipeline would use if
it converted v to ε before guidance. SLD's threshold and scale are then applied in that ε-space, and
the result goes back as x̂₀ = x − σ·ε̂. That holds for every ComfyUI sampling whose noise is
x = x₀ + σ·noise (its EPS class and those built on it: V_PREDICTION, EDM, X0, LCM). A flow-matching
model (CONST: SD3, Flux, ...) mixes as x = (1 − σ)·x₀ + σ·noise, where (x − x̂₀)/σ is not the ε SLD's
hyper-parameters are made for: the SLD nodes refuse such a MODEL (`require_eps_or_v`).

SDXL: each conditioning list the guider holds, the safety concept's included, goes through ComfyUI's
`process_conds` under its own name, so the model's `extra_conds` gives the safety concept its pooled
output and size embedding (`y`) as it does the prompt's, sizes defaulting to the latent's.
"""
import logging

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..sld_core.guiders import SLDRun
from ..sld_core.schedules import advanced_sigmas
from .errors import NodeInputError

log = logging.getLogger(__name__)


def sampler_names():
    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names():
    return list(comfy.samplers.KSampler.SCHEDULERS)


class SLDComfyGuider(comfy.samplers.CFGGuider):
    """ComfyUI guider: CFG plus Safe Latent Diffusion against a safety-concept conditioning.

    Conditionings are batched as [positive, negative, safety concept]: ComfyUI's pre-CFG hooks read
    `conds_out` as [cond, uncond, ...], as they do for its own CFG and for PerpNeg. Where SLD cannot
    change the result (SLD off, or a warm-up step whose safety pass `safety_pass_needed` rules out)
    the evaluation is ComfyUI's own CFG `predict_noise`, so it equals the KSampler bit for bit. A
    model's `sampler_cfg_function` patch (e.g. RescaleCFG) is replaced by the SLD combination on the
    steps SLD guides; pre- and post-CFG hooks run as usual.
    """

    step_offset = 0

    def set_conds(self, positive, negative, safety_concept):
        self.inner_set_conds({"positive": positive, "negative": negative, "safety_concept": safety_concept})

    def set_cfg(self, cfg, params, step_offset=0):
        """`step_offset`: where the sampled sigmas start in the whole schedule (KSamplerAdvanced's
        start_at_step), so that warm-up counts steps of the whole schedule (`SLDRun`)."""
        self.cfg = cfg
        self.params = params
        self.step_offset = step_offset
        self._run = None
        if params.enabled(cfg) and "sampler_cfg_function" in self.model_options:
            log.warning("SLD: the model's CFG function patch is not applied on the steps SLD guides")

    def outer_sample(self, *args, **kwargs):
        self._run = None  # every sampling run starts with zero momentum
        return super().outer_sample(*args, **kwargs)

    def _current_run(self, model_options):
        """The run of these sample sigmas; a new sigmas tensor (a new sampling run) starts a new one."""
        sigmas = model_options["transformer_options"]["sample_sigmas"]
        if self._run is None or self._run_sigmas is not sigmas:
            self._run, self._run_sigmas = SLDRun(self.params, self.cfg, sigmas, step_offset=self.step_offset), sigmas
        return self._run

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        if not self.params.enabled(self.cfg):
            return super().predict_noise(x, timestep, model_options, seed)
        run = self._current_run(model_options)
        step, needed = run.begin(timestep)
        if not needed:
            return super().predict_noise(x, timestep, model_options, seed)

        conds = [self.conds.get("positive"), self.conds.get("negative"), self.conds.get("safety_concept")]
        out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, model_options)
        for fn in model_options.get("sampler_pre_cfg_function", []):
            out = fn({"conds": conds, "conds_out": out, "cond_scale": self.cfg, "timestep": timestep, "input": x,
                      "sigma": timestep, "model": self.inner_model, "model_options": model_options})
        cond_denoised, uncond_denoised, safety_denoised = out

        sigma = timestep.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        eps_cond, eps_uncond, eps_safety = ((x - d) / sigma for d in (cond_denoised, uncond_denoised, safety_denoised))
        denoised = x - run.guide(eps_uncond, eps_cond, eps_safety, step) * sigma

        for fn in model_options.get("sampler_post_cfg_function", []):
            denoised = fn({"denoised": denoised, "cond": conds[0], "uncond": conds[1], "cond_scale": self.cfg,
                           "model": self.inner_model, "uncond_denoised": uncond_denoised, "cond_denoised": cond_denoised,
                           "sigma": timestep, "model_options": model_options, "input": x,
                           "safety_concept": conds[2], "safety_concept_denoised": safety_denoised})
        return denoised


def require_eps_or_v(model):
    """Refuse a MODEL whose sampling has no ε = (x − x̂₀)/σ (see the module docstring), naming it.
    Checked whatever the preset, so a workflow fails at once, not when SLD is switched on later."""
    sampling = model.get_model_object("model_sampling")
    if isinstance(sampling, comfy.model_sampling.EPS):
        return
    if isinstance(sampling, comfy.model_sampling.CONST):
        found = "flow matching (CONST)"
    else:
        # ComfyUI's model_sampling class combines a σ table class and a prediction class: name both
        found = f"{' + '.join(c.__name__ for c in type(sampling).__bases__)} sampling"
    raise NodeInputError("model", f"SLD needs an eps or v-prediction model; {type(model.model).__name__} uses {found}")


def make_guider(model, positive, negative, safety_concept, cfg, params, step_offset=0):
    """ComfyUI's own CFGGuider where SLD is off (bitwise KSampler), else the SLD guider (sampling a
    schedule from its step `step_offset` on)."""
    require_eps_or_v(model)
    if not params.enabled(cfg):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return guider
    guider = SLDComfyGuider(model)
    guider.set_conds(positive, negative, safety_concept)
    guider.set_cfg(cfg, params, step_offset)
    return guider


def ksample_native(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise,
                   safety_concept, params, add_noise=True, start_step=None, last_step=None, force_full_denoise=False):
    """ComfyUI's KSampler path (noise, sigmas, sampler, preview callback) with the SLD guider; the
    last four arguments are KSamplerAdvanced's (ComfyUI's common_ksampler): without `add_noise` the
    latent is sampled as it is, and the schedule is cut by `advanced_sigmas` (an empty cut returns
    the latent, as ComfyUI does)."""
    require_eps_or_v(model)  # before any work on the latent
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if add_noise:
        noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    else:
        noise = torch.zeros(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout, device="cpu")
    sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                     scheduler=scheduler, denoise=denoise, model_options=model.model_options).sigmas
    sigmas = advanced_sigmas(sigmas, start_step, last_step, force_full_denoise)
    out = latent.copy()
    if sigmas is None:
        out["samples"] = latent_image
        return out
    guider = make_guider(model, positive, negative, safety_concept, cfg, params, step_offset=start_step or 0)
    callback = latent_preview.prepare_callback(model, steps)
    samples = guider.sample(noise, latent_image, comfy.samplers.sampler_object(sampler_name), sigmas,
                            denoise_mask=latent.get("noise_mask"), callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    out["samples"] = samples.to(comfy.model_management.intermediate_device())
    return out
