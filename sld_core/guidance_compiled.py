"""The SLD step as one compiled kernel: eqs. 3–8 fused by `torch.compile` into a single pass over memory.

`guidance.sld_guidance` is eager PyTorch: each of its ~12 operations reads and writes whole tensors,
and on CUDA each is a kernel launch. Here the same arithmetic is one expression graph that Inductor
turns into one loop (Triton on CUDA), reading ε_u, ε_p, ε_S and ν once and writing the guided ε and ν
once.

The hyper-parameters travel as a small tensor, not as Python floats, so a new cfg, preset or step does
not recompile; shapes are dynamic, so a new batch size or resolution does not either. It is the SLD
step's one fast path, used only on CUDA when compilation is asked for (`ExecutionOptions.fused_guidance`):
compiling it costs seconds, and on the CPU the step is far too small a share of a sampling step to win
them back (bench/RESULTS.md, "The SLD step").
"""
import functools

import torch


@functools.lru_cache(maxsize=64)
def _coefficients(params, cfg, applied, dtype, device):
    # cached: building a tensor from Python numbers costs more than the fused kernel's arithmetic
    return torch.tensor(
        [params.guidance_scale, params.threshold, params.momentum_scale, params.momentum_beta, cfg, applied],
        dtype=dtype, device=device,
    )


def _sld_pointwise(eps_uncond, eps_cond, eps_safety, momentum, coefficients):
    # Same operations in the same order as guidance.sld_guidance, so the results agree to rounding.
    guidance_scale, threshold, momentum_scale, momentum_beta, cfg, applied = coefficients.unbind()
    diff = eps_cond - eps_safety
    scale = torch.where(diff >= threshold, 0.0, torch.clamp(diff.abs() * guidance_scale, max=1.0))  # eq. 6
    term = (eps_safety - eps_uncond) * scale + momentum_scale * momentum  # eqs. 4, 7
    new_momentum = momentum_beta * momentum + (1 - momentum_beta) * term  # eq. 8
    guided = eps_uncond + cfg * ((eps_cond - eps_uncond) - applied * term)  # eq. 3 (term · 0 in warm-up)
    return guided, new_momentum


@functools.cache
def _compiled():
    return torch.compile(_sld_pointwise, dynamic=True, fullgraph=True)


def sld_guidance_compiled(eps_uncond, eps_cond, eps_safety, cfg, params, momentum, step):
    """Same contract as `guidance.sld_guidance`: returns (guided ε, new momentum ν)."""
    if momentum is None:
        momentum = torch.zeros_like(eps_cond)
    applied = 1.0 if step >= params.warmup_steps else 0.0
    coefficients = _coefficients(params, float(cfg), applied, eps_cond.dtype, eps_cond.device)
    return _compiled()(eps_uncond, eps_cond, eps_safety, momentum, coefficients)
