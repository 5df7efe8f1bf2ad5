"""End to end: `ksample` with SLD against diffusers' `StableDiffusionPipelineSafe` (the oracle).

Same tiny seeded components, prompt, negative prompt, seed and x_T. diffusers multiplies the latents it
is given by its scheduler's `init_noise_sigma` (and DDIM works in VP space), so each test hands it the
latent that its own scaling turns into our x_T. Final latents must agree to 1e-4 relative L2.
"""
import pytest
import torch
from diffusers import (
    DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionPipelineSafe,
)

from comfyui_sld.sld_core.guidance import DEFAULT_SAFETY_CONCEPT, PRESETS, SLDParams
from comfyui_sld.sld_core.ksample import ksample
from comfyui_sld.sld_core.models.clip import load_clip_tokenizer
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.noise import prepare_noise

PROMPT = "a red circle on a blue background, painting"
NEGATIVE = "blurry, low quality"
SEED = 1234
STEPS = 10  # 999/(10-1) = 111: integer timesteps, where ComfyUI's and diffusers' "normal" sigmas coincide
SIZE = 32
CFG = 7.5
SD1_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

# Every preset's values plus custom sets where SLD acts for most of the 10 steps; at 10 steps Weak
# (δ = 15) and Medium (δ = 10) never apply the term, Strong applies it on 3 steps, Max on all.
CASES = {
    **{name: PRESETS[name] for name in ("weak", "medium", "strong", "max")},
    "custom": SLDParams(guidance_scale=1000.0, warmup_steps=3, threshold=0.01, momentum_scale=0.3, momentum_beta=0.4),
    "custom_diffusers_weak_early": SLDParams(guidance_scale=20.0, warmup_steps=2, threshold=0.0, momentum_scale=0.5, momentum_beta=0.7),
}


@pytest.fixture(scope="module")
def setup(tiny_components):
    from comfyui_sld.sld_core.models.clip import Clip

    tokenizer = load_clip_tokenizer()
    clip = Clip(tokenizer, tiny_components["text_encoder"])
    model = Model(tiny_components["unet"])
    conds = {text: clip.encode(text) for text in (PROMPT, NEGATIVE, DEFAULT_SAFETY_CONCEPT)}
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    return dict(components=tiny_components, tokenizer=tokenizer, model=model, conds=conds, latent=latent)


def schedulers():
    return {
        ("euler", "normal"): EulerDiscreteScheduler(**SD1_BETAS, timestep_spacing="linspace", steps_offset=1),
        ("ddim", "ddim_uniform"): DDIMScheduler(
            **SD1_BETAS, clip_sample=False, set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading"
        ),
    }


def our_latent(setup, sampler, scheduler, sld):
    conds = setup["conds"]
    out = ksample(
        setup["model"], SEED, STEPS, CFG, sampler, scheduler, conds[PROMPT], conds[NEGATIVE], setup["latent"],
        safety_concept=conds[DEFAULT_SAFETY_CONCEPT] if sld is not None else None, sld_params=sld, disable_pbar=True,
    )
    return out["samples"] * setup["model"].latent_scale  # into diffusers' (scaled) latent space


def diffusers_start_latent(setup, scheduler):
    """The latent diffusers must be given so that its own scaling reproduces our x_T."""
    model = setup["model"]
    noise = prepare_noise(setup["latent"]["samples"], SEED)
    scheduler.set_timesteps(STEPS)
    if isinstance(scheduler, DDIMScheduler):
        # We start at σ₀ = σ(t₀) < σ_max, so x_T = noise·σ₀ (no √(1+σ²)); DDIM works in VP space.
        sigma0 = model.schedule.sigmas[int(scheduler.timesteps[0])]
        return noise * sigma0 / (1 + sigma0**2) ** 0.5
    sigma_max = model.schedule.sigma_max
    return noise * (1 + sigma_max**2) ** 0.5 / scheduler.init_noise_sigma


def diffusers_latent(setup, scheduler, sld, safe=True):
    c = setup["components"]
    kwargs = dict(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=setup["tokenizer"], unet=c["unet"],
                  scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = (StableDiffusionPipelineSafe if safe else StableDiffusionPipeline)(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    latents = diffusers_start_latent(setup, scheduler)
    final = {}
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG,
                  height=SIZE, width=SIZE, latents=latents, output_type="np")
    if safe:
        sld_kwargs = dict(sld_guidance_scale=0.0) if sld is None else dict(
            sld_guidance_scale=sld.guidance_scale, sld_warmup_steps=sld.warmup_steps, sld_threshold=sld.threshold,
            sld_momentum_scale=sld.momentum_scale, sld_mom_beta=sld.momentum_beta)
        pipe(**common, **sld_kwargs, callback=lambda i, t, lat: final.update(latents=lat), callback_steps=1)
    else:
        def on_step_end(pipe, i, t, kw):
            final["latents"] = kw["latents"]
            return kw
        pipe(**common, callback_on_step_end=on_step_end)
    return final["latents"]


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("sampler_scheduler", [("euler", "normal"), ("ddim", "ddim_uniform")])
@pytest.mark.parametrize("case", list(CASES))
def test_sld_sampling_equals_diffusers_safe_pipeline(setup, sampler_scheduler, case):
    sld = CASES[case]
    ours = our_latent(setup, *sampler_scheduler, sld)
    theirs = diffusers_latent(setup, schedulers()[sampler_scheduler], sld)
    assert rel_l2(ours, theirs) < 1e-4


@pytest.mark.parametrize("sampler_scheduler", [("euler", "normal"), ("ddim", "ddim_uniform")])
def test_plain_cfg_equals_diffusers_sd_pipeline(setup, sampler_scheduler):
    ours = our_latent(setup, *sampler_scheduler, None)
    theirs = diffusers_latent(setup, schedulers()[sampler_scheduler], None, safe=False)
    assert rel_l2(ours, theirs) < 1e-4


def test_sld_effect_is_not_trivial(setup):
    """Guard against a blind comparison: where SLD acts, it moves the result well beyond the tolerance."""
    plain = our_latent(setup, "euler", "normal", None)
    for case in ("strong", "max", "custom", "custom_diffusers_weak_early"):
        assert rel_l2(our_latent(setup, "euler", "normal", CASES[case]), plain) > 1e-3, case  # ≥ 10× the parity tolerance
    # and where the warm-up covers the whole run, it is bitwise plain CFG
    assert torch.equal(our_latent(setup, "euler", "normal", PRESETS["medium"]), plain)
