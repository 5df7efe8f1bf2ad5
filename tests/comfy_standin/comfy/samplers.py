"""Stand-in for comfy/samplers.py: the guider protocol, the batched conditioning call, two samplers
and the KSampler's sigmas.

The protocol a guider lives in, as ComfyUI 0.3.64 documents and runs it:
- `calc_cond_batch(model, conds, x, sigma, model_options)` returns one *denoised* (x̂₀) prediction per
  conditioning list, all from one batched model call; a `None` list is not evaluated (zeros).
- `CFGGuider.predict_noise` evaluates [cond, uncond] (uncond left out at cfg == 1), passes the raw
  outputs through every `sampler_pre_cfg_function`, combines them (uncond + cfg·(cond − uncond), or the
  model's `sampler_cfg_function`), then passes the result through every `sampler_post_cfg_function`.
- `CFGGuider.sample` → `outer_sample` → `inner_sample`: the model's object patches are set, the latent
  goes into the model's space, every conditioning list the guider holds (by name: positive, negative,
  and any other, e.g. SLD's safety concept) is turned into model inputs by `process_conds` (the model's
  `extra_conds`, with the list's name as prompt type and the latent's size ×8 as default width/height),
  a copy of the model options gets the run's sigmas as `transformer_options["sample_sigmas"]`, and the
  sampler calls the guider once per model evaluation.
"""
import math

import torch

from .model_patcher import create_model_options_clone

PRE_CFG_KEYS = ("conds", "conds_out", "cond_scale", "timestep", "input", "sigma", "model", "model_options")
POST_CFG_KEYS = ("denoised", "cond", "uncond", "cond_scale", "model", "uncond_denoised", "cond_denoised",
                 "sigma", "model_options", "input")


def convert_cond(conditioning):
    """CONDITIONING [[tensor, {extras}], ...] as the guider keeps it: one dict per entry, its extras
    (pooled_output, sizes, ...) kept beside the tensor, and an empty `model_conds` for process_conds."""
    return [{**extras, "cross_attn": tensor, "model_conds": extras.get("model_conds", {})}
            for tensor, extras in conditioning]


def encode_model_conds(model_function, conds, noise, device, prompt_type, **kwargs):
    """Each entry's model inputs from `model_function(**entry, noise, device, width, height,
    prompt_type, ...)`: width/height default to the latent's size ×8, prompt_type to the list's name."""
    for t, entry in enumerate(conds):
        params = {**entry, "device": device, "noise": noise}
        params["width"] = params.get("width", noise.shape[3] * 8)
        params["height"] = params.get("height", noise.shape[2] * 8)
        params["prompt_type"] = params.get("prompt_type", prompt_type)
        for key, value in kwargs.items():
            params.setdefault(key, value)
        conds[t] = {**entry, "model_conds": {**entry["model_conds"], **model_function(**params)}}
    return conds


def process_conds(model, noise, conds, device, latent_image=None, denoise_mask=None, seed=None):
    """Every named conditioning list (copied) with its entries' model inputs."""
    for name in conds:
        conds[name] = encode_model_conds(model.extra_conds, conds[name][:], noise, device, name,
                                         latent_image=latent_image, denoise_mask=denoise_mask, seed=seed)
    return conds


def calc_cond_batch(model, conds, x_in, timestep, model_options):
    """Denoised predictions for each list in `conds`, from one model call over all their entries'
    model inputs (`c_crossattn` tiled to one length, `y` repeated to the batch). Entries of one list
    are averaged with their `strength` as weight (whole-image areas only)."""
    entries = [(k, entry) for k, cond in enumerate(conds) if cond is not None for entry in cond]
    outputs = [torch.zeros_like(x_in) for _ in conds]
    if not entries:
        return outputs
    batch = x_in.shape[0]
    contexts = [entry["model_conds"]["c_crossattn"] for _, entry in entries]
    length = math.lcm(*(c.shape[1] for c in contexts))  # tile to one length: attention is unchanged
    inputs = {"c_crossattn": torch.cat([c.repeat(batch, length // c.shape[1], 1) for c in contexts])}
    if any("y" in entry["model_conds"] for _, entry in entries):
        inputs["y"] = torch.cat([entry["model_conds"]["y"].repeat(batch, 1) for _, entry in entries])
    x = torch.cat([x_in] * len(entries))
    sigma = torch.cat([timestep] * len(entries))
    denoised = model.apply_model(x, sigma, transformer_options=model_options.get("transformer_options", {}),
                                 **inputs)
    weights = [0.0] * len(conds)
    for (k, entry), out in zip(entries, denoised.chunk(len(entries))):
        strength = entry.get("strength", 1.0)
        outputs[k] = outputs[k] + out * strength
        weights[k] += strength
    return [out / weight if weight else out for out, weight in zip(outputs, weights)]


def cfg_function(model, cond_pred, uncond_pred, cond_scale, x, timestep, model_options, cond=None, uncond=None):
    """CFG on denoised predictions, then the post-CFG hooks in order (each one's result feeds the next)."""
    cfg_fn = model_options.get("sampler_cfg_function")
    if cfg_fn is not None:  # a patch works on x − x̂₀ (σ·ε) and returns it
        result = x - cfg_fn({"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale,
                             "timestep": timestep, "input": x, "sigma": timestep, "cond_denoised": cond_pred,
                             "uncond_denoised": uncond_pred, "model": model, "model_options": model_options,
                             "input_cond": cond, "input_uncond": uncond})
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        result = fn({"denoised": result, "cond": cond, "uncond": uncond, "cond_scale": cond_scale, "model": model,
                     "uncond_denoised": uncond_pred, "cond_denoised": cond_pred, "sigma": timestep,
                     "model_options": model_options, "input": x})
    return result


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None):
    """One CFG evaluation: the batched call, the pre-CFG hooks, then `cfg_function`."""
    skip_uncond = math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    conds = [cond, None if skip_uncond else uncond]
    out = calc_cond_batch(model, conds, x, timestep, model_options)
    for fn in model_options.get("sampler_pre_cfg_function", []):
        out = fn({"conds": conds, "conds_out": out, "cond_scale": cond_scale, "timestep": timestep, "input": x,
                  "sigma": timestep, "model": model, "model_options": model_options})
    return cfg_function(model, out[0], out[1], cond_scale, x, timestep, model_options, cond=conds[0], uncond=conds[1])


class CFGGuider:
    """ComfyUI's guider: holds a MODEL (ModelPatcher), conditionings by name and a cfg scale."""

    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.original_conds = {}
        self.cfg = 1.0

    def set_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "negative": negative})

    def set_cfg(self, cfg):
        self.cfg = cfg

    def inner_set_conds(self, conds):
        for name, conditioning in conds.items():
            self.original_conds[name] = convert_cond(conditioning)

    def __call__(self, *args, **kwargs):
        return self.outer_predict_noise(*args, **kwargs)

    def outer_predict_noise(self, x, timestep, model_options={}, seed=None):
        return self.predict_noise(x, timestep, model_options, seed)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        return sampling_function(self.inner_model, x, timestep, self.conds.get("negative"),
                                 self.conds.get("positive"), self.cfg, model_options=model_options, seed=seed)

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed):
        if latent_image is not None and torch.count_nonzero(latent_image) > 0:  # an empty latent stays as is
            latent_image = self.inner_model.process_latent_in(latent_image)
        self.conds = process_conds(self.inner_model, noise, self.conds, device, latent_image, denoise_mask, seed)
        model_options = create_model_options_clone(self.model_options)
        model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
        extra_args = {"model_options": model_options, "seed": seed}
        samples = sampler.sample(self, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        return self.inner_model.process_latent_out(samples.to(torch.float32))

    def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
                     seed=None):
        device = self.model_patcher.load_device
        # .to() of a tensor already there is the same tensor: a guider sees one sigmas object per call.
        noise, latent_image, sigmas = noise.to(device), latent_image.to(device), sigmas.to(device)
        with self.model_patcher.patched() as self.inner_model:
            try:
                return self.inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                         disable_pbar, seed)
            finally:
                del self.inner_model

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if sigmas.shape[-1] == 0:
            return latent_image
        self.conds = {name: [dict(entry) for entry in cond] for name, cond in self.original_conds.items()}
        original_options = self.model_options
        self.model_options = create_model_options_clone(self.model_options)
        try:
            output = self.outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.model_options = original_options
        del self.conds
        return output


class KSAMPLER:
    """A sampler function `fn(model, x, sigmas, extra_args, callback, disable)` over the guider."""

    def __init__(self, sampler_function, extra_options={}, inpaint_options={}):
        self.sampler_function = sampler_function
        self.extra_options = extra_options
        self.inpaint_options = inpaint_options

    def max_denoise(self, model_wrap, sigmas):
        sigma_max, sigma = float(model_wrap.inner_model.model_sampling.sigma_max), float(sigmas[0])
        return math.isclose(sigma_max, sigma, rel_tol=1e-05) or sigma > sigma_max

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        if denoise_mask is not None:
            raise NotImplementedError("the ComfyUI stand-in does not implement denoise masks")
        model_sampling = model_wrap.inner_model.model_sampling
        x = model_sampling.noise_scaling(sigmas[0], noise, latent_image, self.max_denoise(model_wrap, sigmas))
        total_steps = len(sigmas) - 1
        k_callback = None
        if callback is not None:
            k_callback = lambda info: callback(info["i"], info["denoised"], info["x"], total_steps)  # noqa: E731

        def model(x, sigma, model_options=None, seed=None, **kwargs):
            return model_wrap(x, sigma, model_options=model_options, seed=seed)

        samples = self.sampler_function(model, x, sigmas, extra_args=extra_args, callback=k_callback,
                                        disable=disable_pbar, **self.extra_options)
        return model_sampling.inverse_noise_scaling(sigmas[-1], samples)


def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """First order: one model evaluation per step."""
    extra_args = extra_args or {}
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "denoised": denoised})
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Second order: an Euler predictor to σ_{i+1} and a trapezoidal corrector evaluated there (the
    guider is called twice a step, the second time at the next step's σ); the last step is Euler."""
    extra_args = extra_args or {}
    ones = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "denoised": denoised})
        slope = (x - denoised) / sigma
        x_next = x + slope * (sigma_next - sigma)
        if sigma_next > 0:
            slope_next = (x_next - model(x_next, sigma_next * ones, **extra_args)) / sigma_next
            x_next = x + (slope + slope_next) / 2 * (sigma_next - sigma)
        x = x_next
    return x


SAMPLER_FUNCTIONS = {"euler": sample_euler, "heun": sample_heun}


def sampler_object(name):
    if name not in SAMPLER_FUNCTIONS:
        raise ValueError(f"the ComfyUI stand-in has no sampler {name!r}; it has {list(SAMPLER_FUNCTIONS)}")
    return KSAMPLER(SAMPLER_FUNCTIONS[name])


def karras_sigmas(steps, sigma_min, sigma_max, rho=7.0):
    """Karras et al. 2022, eq. 5: σ evenly spaced in σ^(1/ρ), then a final 0."""
    ramp = torch.linspace(0, 1, steps)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(inv_max + ramp * (inv_min - inv_max)) ** rho, torch.zeros(1)])


def exponential_sigmas(steps, sigma_min, sigma_max):
    """σ evenly spaced in log σ, then a final 0."""
    return torch.cat([torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp(), torch.zeros(1)])


SCHEDULER_FUNCTIONS = {"karras": karras_sigmas, "exponential": exponential_sigmas}


class KSampler:
    """Only what the bridge reads: the name lists and `sigmas` for steps, scheduler and denoise."""

    SAMPLERS = list(SAMPLER_FUNCTIONS)
    SCHEDULERS = list(SCHEDULER_FUNCTIONS)

    def __init__(self, model, steps, device, sampler=None, scheduler=None, denoise=None, model_options={}):
        if sampler not in self.SAMPLERS or scheduler not in self.SCHEDULERS:
            raise ValueError(f"the ComfyUI stand-in has no sampler {sampler!r} or scheduler {scheduler!r}")
        self.model, self.device, self.sampler, self.scheduler = model, device, sampler, scheduler
        self.model_options = model_options
        self.set_steps(steps, denoise)

    def calculate_sigmas(self, steps):
        model_sampling = self.model.get_model_object("model_sampling")
        return SCHEDULER_FUNCTIONS[self.scheduler](steps, float(model_sampling.sigma_min),
                                                   float(model_sampling.sigma_max))

    def set_steps(self, steps, denoise=None):
        """denoise < 1: the tail `steps + 1` sigmas of a schedule of int(steps / denoise) steps."""
        self.steps = steps
        if denoise is None or denoise > 0.9999:
            self.sigmas = self.calculate_sigmas(steps).to(self.device)
        elif denoise <= 0.0:
            self.sigmas = torch.FloatTensor([])
        else:
            self.sigmas = self.calculate_sigmas(int(steps / denoise)).to(self.device)[-(steps + 1):]
