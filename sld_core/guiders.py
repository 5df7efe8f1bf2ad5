"""Guiders: denoisers that combine several conditionings of one model evaluation.

A guider is what a sampler calls as its model: ``guider(x, sigma, **extra_args) -> denoised``. It
evaluates every conditioning it needs in **one batched UNet call** and combines the predictions:
`CFGGuider` as ComfyUI's KSampler does, `SLDGuider` with Safe Latent Diffusion on top.

A guider is called once per model evaluation (twice a step for Heun-type samplers), so SLD takes
its step index from the current σ within the run's sigmas, never from a call counter; `prepare`
starts a run and resets the momentum.

Conditionings of several entries (`ConditioningCombine`, areas, timestep ranges) follow ComfyUI
(`conditioning_areas`): per evaluation each input's x̂₀ is the weighted average over its entries that
apply, one model call per crop size. A conditioning of one whole-image entry keeps the single
batched call above. With SLD, the averaged predictions of the negative, the positive and the safety
concept are combined pixel by pixel, ε_k = (x − x̂₀_k)/σ, by the same SLD step and momentum rules:
the safety concept stays global — its text applies to the whole image — and, as ComfyUI treats the
negative (and as our ComfyUI bridge hands all three inputs to ComfyUI), it is also evaluated on each
area crop of the prompts, so ε_cond, ε_uncond and ε_safety compare like with like inside an area.
"""
import logging
import math

import torch

from . import conditioning_areas as areas
from .guidance import sld_guidance
from .guidance_compiled import sld_guidance_compiled

log = logging.getLogger(__name__)


# ComfyUI encodes each conditioning with its input's name as prompt type; only "negative" changes
# anything (the SDXL refiner's default aesthetic score).
PROMPT_TYPES = {"negative": "negative"}


def batch_contexts(contexts, batch_size):
    """Stack contexts into one [k·B, tokens, dim] batch, in the given order, each repeated B times.

    Contexts of different lengths (prompts past 77 tokens) are tiled to their least common multiple,
    as ComfyUI does: repeating all keys of an attention leaves its softmax unchanged.
    """
    length = math.lcm(*(c.shape[1] for c in contexts))
    tiled = [c.repeat(batch_size, length // c.shape[1], 1) for c in contexts]
    return torch.cat(tiled)


def _per_sample(sigma, x):
    return sigma.to(x.device, torch.float32).view(-1, *([1] * (x.ndim - 1)))


class CFGGuider:
    """Classifier-free guidance: denoised = uncond + cfg·(cond − uncond) (ComfyUI's cfg_function).

    With cfg == 1 the negative pass is skipped, as ComfyUI does; the result is the positive prediction.
    Conditionings of several entries (areas, timestep ranges, combined prompts) are averaged per
    input first, as `conditioning_areas` describes.
    """

    def __init__(self, model, positive, negative, cfg):
        self.model = model
        self.cfg = float(cfg)
        self.inputs = {"positive": areas.entries(positive, "positive", model.schedule),
                       "negative": areas.entries(negative, "negative", model.schedule)}
        self._batched = {}
        self._plans = {}

    def planned_inputs(self):
        """The inputs whose entries ComfyUI would prepare together (area twins go between them)."""
        return ("positive", "negative")

    @property
    def single(self):
        """Every input is one whole-image entry: the batched fast path, as before multi-entry support."""
        return all(len(self.inputs[n]) == 1 and self.inputs[n][0].plain for n in self.planned_inputs())

    def prepare(self, sigmas):
        """Start a sampling run over `sigmas` (CFG keeps no state)."""

    def _batch(self, entries, batch, latent_shape):
        """The UNet's context batch for `entries` (each repeated `batch` times), on the model's device
        and dtype; for SDXL with the added inputs (`Model.added_inputs`, whose default sizes come from
        `latent_shape`, the whole latent's) as (context, added). Built once per run, not per step:
        conditionings live on the CPU, and re-batching and copying them every step cost milliseconds
        on a GPU."""
        key = (tuple(id(e) for e in entries), batch, latent_shape)
        if key not in self._batched:
            stacked = batch_contexts([e.context for e in entries], batch)
            stacked = stacked.to(self.model.device, self.model.dtype)
            added_inputs = getattr(self.model, "added_inputs", None)
            added = added_inputs([e.extras for e in entries], [PROMPT_TYPES.get(e.source, "positive") for e in entries],
                                 batch, latent_shape) if added_inputs else ()
            self._batched[key] = (stacked, added) if added else stacked
        return self._batched[key]

    def contexts(self, names, batch, latent_shape=None):
        """`_batch` of these inputs' single entries (input names, in order)."""
        return self._batch([self.inputs[n][0] for n in names], batch, latent_shape)

    def denoised(self, x, sigma, names):
        """x̂₀ of each input in `names` at (x, σ): its entries that apply, averaged by weight
        (`conditioning_areas`; ComfyUI's calc_cond_batch). One model call per crop size."""
        dims = tuple(x.shape[2:])
        if dims not in self._plans:
            planned = areas.plan({n: self.inputs[n] for n in self.planned_inputs()}, dims)
            windows = {}
            for listed in planned.values():
                for entry in listed:
                    index, weight = areas.window(entry, dims)
                    windows[entry] = (index, weight.to(x.device, x.dtype))
            self._plans[dims] = (planned, windows)
        planned, windows = self._plans[dims]
        batch, shape = x.shape[0], tuple(x.shape)

        def evaluate(crops, sigmas, entries):
            return self.model.denoise(crops, sigmas, self._batch(entries, batch, shape))

        return areas.average_denoised(x, sigma, planned, names, evaluate, windows)

    def __call__(self, x, sigma, **extra_args):
        batch = x.shape[0]
        if math.isclose(self.cfg, 1.0):
            if self.single:
                return self.model.denoise(x, sigma, self.contexts(("positive",), batch, tuple(x.shape)))
            return self.denoised(x, sigma, ("positive",))[0]
        if self.single:
            contexts = self.contexts(("negative", "positive"), batch, tuple(x.shape))
            uncond, cond = self.model.denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), contexts).chunk(2)
        else:
            uncond, cond = self.denoised(x, sigma, ("negative", "positive"))
        return uncond + (cond - uncond) * self.cfg


class BasicGuider(CFGGuider):
    """One conditioning and no guidance (ComfyUI's ``BasicGuider``): CFG at scale 1, which evaluates
    the positive conditioning only."""

    def __init__(self, model, conditioning):
        super().__init__(model, conditioning, conditioning, 1.0)


class SLDRun:
    """Step index and momentum of one SLD sampling run over `sigmas`: the bookkeeping every SLD guider
    shares (this module's `SLDGuider` and the ComfyUI bridge), so both follow one rule.

    Steps and momentum: an evaluation at σ belongs to step i, the last schedule entry with σ_i ≥ σ
    (a DPM2 midpoint belongs to the step it is inside; Heun's corrector at σ_{i+1} to step i+1).
    The momentum ν advances once per step: every evaluation of step i starts from ν at the end of
    step i−1, and the last evaluation of step i sets ν for step i+1. For first-order samplers this is
    exactly diffusers' per-iteration rule. A new run starts with ν = 0.

    `fused`: combine with the torch.compile-fused kernel (`guidance_compiled`), same arithmetic;
    otherwise with `guidance.sld_guidance` itself.

    `step_offset`: the steps of the whole schedule before `sigmas` (a sampler that starts at
    ``start_at_step``): step indices, and so the warm-up, count from the whole schedule's first step,
    while ν still starts at zero (nothing passes between two sampler nodes).
    """

    def __init__(self, params, cfg, sigmas, fused=False, step_offset=0):
        self.params = params
        self.combine = sld_guidance_compiled if fused else sld_guidance
        self.cfg = float(cfg)
        self.sigmas = sigmas.detach().float().cpu()
        self.step_offset = int(step_offset)
        self.num_steps = self.step_offset + len(sigmas) - 1  # the step this run ends at, in the whole schedule
        self._step = -1
        self._momentum_in = None  # ν at the start of the current step
        self._momentum_out = None  # ν after the current step's latest evaluation
        if params.enabled(self.cfg) and params.warmup_steps >= self.num_steps:
            log.info(
                "SLD warm-up (%d steps) covers all %d steps: the safety term is never applied",
                params.warmup_steps, self.num_steps,
            )

    def step_index(self, sigma):
        """Index i of the step this σ falls in: the last σ_i (i < steps) with σ_i ≥ σ."""
        value = float(sigma.flatten()[0])
        count = int((self.sigmas[:-1] >= value * (1 - 1e-5)).sum())
        return self.step_offset + max(count - 1, 0)

    def begin(self, sigma):
        """Enter the evaluation at `sigma`: returns (its step index, whether the safety pass is needed)."""
        step = self.step_index(sigma)
        if step != self._step:
            self._step = step
            self._momentum_in = self._momentum_out
        needed = self.params.safety_pass_needed(step, self.num_steps)
        if not needed:
            log.debug("SLD step %d: safety pass skipped (warm-up, momentum unused)", step)
        return step, needed

    def guide(self, eps_uncond, eps_cond, eps_safety, step):
        """The SLD-guided ε of one evaluation of `step` (sld_core.guidance), keeping the step's ν."""
        # Neither combination writes into ν, so every evaluation of a step can share `_momentum_in`.
        eps, self._momentum_out = self.combine(eps_uncond, eps_cond, eps_safety, self.cfg, self.params,
                                               self._momentum_in, step)
        return eps


class SLDGuider(CFGGuider):
    """CFG plus Safe Latent Diffusion against a safety-concept conditioning (see `guidance`).

    Per evaluation: one UNet call over [negative, positive, safety concept] (the safety pass is left
    out where `SLDParams.safety_pass_needed` says it cannot matter), ε_k = (x − x̂₀_k)/σ, the SLD
    combination in ε-space, then x̂₀ = x − σ·ε̂. Steps and momentum follow `SLDRun` (`step_offset`:
    where the sigmas start in the whole schedule).
    """

    def __init__(self, model, positive, negative, safety_concept, cfg, params, step_offset=0):
        super().__init__(model, positive, negative, cfg)
        self.params = params
        self.step_offset = step_offset
        self.inputs["safety"] = areas.entries(safety_concept, "safety_concept", model.schedule)
        self.run = None

    def planned_inputs(self):
        # As the ComfyUI bridge, which hands ComfyUI the safety concept only when SLD can act.
        return ("positive", "negative", "safety") if self.params.enabled(self.cfg) else ("positive", "negative")

    def prepare(self, sigmas):
        """Start a sampling run over `sigmas`: forget the momentum of any earlier run."""
        self.run = SLDRun(self.params, self.cfg, sigmas, fused=self.model.execution.fused_guidance,
                          step_offset=self.step_offset)

    def step_index(self, sigma):
        return self.run.step_index(sigma)

    def __call__(self, x, sigma, **extra_args):
        if self.run is None:
            raise RuntimeError("SLDGuider.prepare(sigmas) must be called before sampling")
        if not self.params.enabled(self.cfg):
            return super().__call__(x, sigma)
        step, needed = self.run.begin(sigma)
        if not needed:
            # Same arithmetic as SLD disabled, so a warm-up covering the run is bitwise plain CFG.
            return super().__call__(x, sigma)

        batch = x.shape[0]
        if self.single:
            contexts = self.contexts(("negative", "positive", "safety"), batch, tuple(x.shape))
            x3 = torch.cat([x, x, x])
            sigma3 = torch.cat([sigma, sigma, sigma])
            eps_uncond, eps_cond, eps_safety = self.model.predict_eps(x3, sigma3, contexts).chunk(3)
        else:
            # ε of the averaged x̂₀, as the ComfyUI bridge takes it (where no entry applies x̂₀ is 0).
            per_sample = _per_sample(sigma, x)
            eps_uncond, eps_cond, eps_safety = ((x - d) / per_sample
                                                for d in self.denoised(x, sigma, ("negative", "positive", "safety")))
        eps = self.run.guide(eps_uncond, eps_cond, eps_safety, step)
        return x - eps * _per_sample(sigma, x)
