"""Guiders: denoisers that combine several conditionings of one model evaluation.

A guider is what a sampler calls as its model: ``guider(x, sigma, **extra_args) -> denoised``. It
evaluates every conditioning it needs in **one batched UNet call** and combines the predictions:
`CFGGuider` as ComfyUI's KSampler does, `SLDGuider` with Safe Latent Diffusion on top.

A guider is called once per model evaluation (twice a step for Heun-type samplers), so SLD takes
its step index from the current σ within the run's sigmas, never from a call counter; `prepare`
starts a run and resets the momentum.
"""
import logging
import math

import torch

from .errors import InvalidInputError
from .guidance import sld_guidance
from .guidance_compiled import sld_guidance_compiled

log = logging.getLogger(__name__)


def conditioning_context(conditioning, name):
    """The text-embedding tensor [1, tokens, dim] of a ComfyUI CONDITIONING with one entry."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InvalidInputError(f"{name}: expected a CONDITIONING list [[tensor, {{...}}]], got {type(conditioning).__name__}")
    if len(conditioning) != 1:
        raise InvalidInputError(
            f"{name}: conditioning with {len(conditioning)} entries (ConditioningCombine) is not supported "
            "outside ComfyUI yet; use one text encode per input"
        )
    context = conditioning[0][0]
    if not torch.is_tensor(context) or context.ndim != 3:
        raise InvalidInputError(f"{name}: expected an embedding tensor [1, tokens, dim], got {getattr(context, 'shape', context)}")
    return context


def conditioning_extra(conditioning):
    """The extra dict of a CONDITIONING's entry (pooled output, SDXL sizes), {} if it has none."""
    entry = conditioning[0]
    return entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}


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
    """

    def __init__(self, model, positive, negative, cfg):
        self.model = model
        self.cfg = float(cfg)
        self.positive = conditioning_context(positive, "positive")
        self.negative = conditioning_context(negative, "negative")
        self.extras = {"positive": conditioning_extra(positive), "negative": conditioning_extra(negative)}
        self._batched = {}

    def prepare(self, sigmas):
        """Start a sampling run over `sigmas` (CFG keeps no state)."""

    def contexts(self, names, batch, latent_shape=None):
        """The UNet's context batch for these conditionings (attribute names, in order), each repeated
        `batch` times, on the model's device and dtype; for SDXL with the added inputs
        (`Model.added_inputs`, whose default sizes come from `latent_shape`) as (context, added).
        Built once per run, not per step: conditionings live on the CPU, and re-batching and copying
        them every step cost milliseconds on a GPU."""
        key = (names, batch, latent_shape)
        if key not in self._batched:
            stacked = batch_contexts([getattr(self, name) for name in names], batch)
            stacked = stacked.to(self.model.device, self.model.dtype)
            added_inputs = getattr(self.model, "added_inputs", None)
            added = added_inputs([self.extras[n] for n in names], [PROMPT_TYPES.get(n, "positive") for n in names],
                                 batch, latent_shape) if added_inputs else ()
            self._batched[key] = (stacked, added) if added else stacked
        return self._batched[key]

    def __call__(self, x, sigma, **extra_args):
        batch = x.shape[0]
        if math.isclose(self.cfg, 1.0):
            return self.model.denoise(x, sigma, self.contexts(("positive",), batch, tuple(x.shape)))
        contexts = self.contexts(("negative", "positive"), batch, tuple(x.shape))
        denoised = self.model.denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), contexts)
        uncond, cond = denoised.chunk(2)
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
        self.safety = conditioning_context(safety_concept, "safety_concept")
        self.extras["safety"] = conditioning_extra(safety_concept)
        self.run = None

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
        contexts = self.contexts(("negative", "positive", "safety"), batch, tuple(x.shape))
        x3 = torch.cat([x, x, x])
        sigma3 = torch.cat([sigma, sigma, sigma])
        eps_uncond, eps_cond, eps_safety = self.model.predict_eps(x3, sigma3, contexts).chunk(3)
        eps = self.run.guide(eps_uncond, eps_cond, eps_safety, step)
        return x - eps * _per_sample(sigma, x)
