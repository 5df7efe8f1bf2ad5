"""Safe Latent Diffusion guidance: one denoising step's combination of noise predictions.

Schramowski et al., "Safe Latent Diffusion" (CVPR 2023, arXiv 2211.05105), equations 3-8, exactly as
diffusers' `StableDiffusionPipelineSafe` applies them (our oracle). All quantities are ε (noise)
predictions; the threshold and the element-wise scale are only meaningful in ε-space.

Owns the combination `sld_guidance`, written as the equations: the specification the tests hold every
other path to, and what runs on the CPU. Its parameters (and when the safety pass can be skipped) are
`sld_params.SLDParams`, re-exported here.
`guidance_compiled.sld_guidance_compiled` is the same step as one torch.compile-fused kernel, the one
fast path, used on CUDA with `--compile` (bench/RESULTS.md says why no other is kept).
"""
import torch

from .sld_params import DEFAULT_SAFETY_CONCEPT, PRESET_NAMES, PRESETS, SLDParams, resolve_params

__all__ = ["DEFAULT_SAFETY_CONCEPT", "PRESET_NAMES", "PRESETS", "SLDParams", "resolve_params", "sld_guidance"]


def sld_guidance(eps_uncond, eps_cond, eps_safety, cfg, params, momentum, step):
    """One SLD step, written as the paper's equations. Returns (guided ε, new momentum ν).

    `momentum` is ν from the previous step (None at the first step). The safety term is subtracted
    inside the CFG bracket, so it is also multiplied by cfg, as in diffusers.
    """
    if momentum is None:
        momentum = torch.zeros_like(eps_cond)
    diff = eps_cond - eps_safety
    scale = torch.clamp(diff.abs() * params.guidance_scale, max=1.0)  # eq. 6, element-wise scale
    scale = torch.where(diff >= params.threshold, torch.zeros_like(scale), scale)  # eq. 6, threshold λ
    safety_term = (eps_safety - eps_uncond) * scale  # eq. 4
    safety_term = safety_term + params.momentum_scale * momentum  # eq. 7
    momentum = params.momentum_beta * momentum + (1 - params.momentum_beta) * safety_term  # eq. 8
    guidance = eps_cond - eps_uncond
    if step >= params.warmup_steps:
        guidance = guidance - safety_term  # eq. 3
    return eps_uncond + cfg * guidance, momentum
