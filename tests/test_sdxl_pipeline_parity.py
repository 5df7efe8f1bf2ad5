"""End to end on a tiny seeded SDXL: `ksample` (plain CFG and SLD) against diffusers.

SLD disabled: the final latents equal diffusers' ``StableDiffusionXLPipeline`` (Euler, linspace
spacing, x_T converted as in test_pipeline_parity.py), for a plain CLIPTextEncode graph (ComfyUI's
default sizes: the latent's) and for CLIPTextEncodeSDXL with non-default sizes, crops and separate
text_g / text_l. SLD on: equal to a reference loop written here from diffusers' SDXL UNet,
``EulerDiscreteScheduler``, ``encode_prompt`` and ``_get_add_time_ids`` plus the plain SLD function;
and SLD moves the result by more than 10× the tolerance.
"""

import pytest

import tiny_families  # tests/tiny_families.py (pytest's pythonpath in pyproject.toml)
import torch

from comfyui_sld.sld_core.guidance import DEFAULT_SAFETY_CONCEPT, PRESETS, SLDParams, sld_guidance
from comfyui_sld.sld_core.ksample import ksample
from comfyui_sld.sld_core.models.clip import TOKENIZER_DIR, load_clip_tokenizer
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.models.sdxl_clip import SDXLClip
from comfyui_sld.sld_core.noise import prepare_noise

PROMPT, PROMPT_G, NEGATIVE = "a red circle on a blue background, painting", "a blue square", "blurry, low quality"
SEED, STEPS, SIZE, CFG = 1234, 10, 32, 7.5
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
SIZES = dict(width=64, height=48, crop_w=8, crop_h=16, target_width=40, target_height=56)  # CLIPTextEncodeSDXL
CUSTOM = SLDParams(guidance_scale=1000.0, warmup_steps=0, threshold=0.01, momentum_scale=0.3, momentum_beta=0.4)


@pytest.fixture(scope="module")
def setup():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    parts = tiny_families.build("SDXL")
    model = Model(parts["unet"], latent_scale=0.13025)
    clip = SDXLClip(load_clip_tokenizer(), parts["text_encoder"], parts["text_encoder_2"])
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token="!")
    pipe = StableDiffusionXLPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], text_encoder_2=parts["text_encoder_2"],
        tokenizer=load_clip_tokenizer(), tokenizer_2=tokenizer_2, unet=parts["unet"],
        scheduler=EulerDiscreteScheduler(**BETAS, timestep_spacing="linspace", steps_offset=1),
        force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    return dict(model=model, clip=clip, pipe=pipe, latent=latent)


def start_latent(setup):
    """What diffusers must be given so that its init_noise_sigma scaling gives our x_T."""
    scheduler = setup["pipe"].scheduler
    scheduler.set_timesteps(STEPS)
    sigma_max = setup["model"].schedule.sigma_max
    return prepare_noise(setup["latent"]["samples"], SEED) * (1 + sigma_max**2) ** 0.5 / scheduler.init_noise_sigma


def ours(setup, sdxl_sizes=False, sld=None):
    clip = setup["clip"]
    if sdxl_sizes:
        positive = clip.encode_sdxl(**SIZES, text_g=PROMPT_G, text_l=PROMPT)
        negative = clip.encode_sdxl(**SIZES, text_g=NEGATIVE, text_l=NEGATIVE)
    else:
        positive, negative = clip.encode(PROMPT), clip.encode(NEGATIVE)
    safety = clip.encode(DEFAULT_SAFETY_CONCEPT) if sld is not None else None
    out = ksample(setup["model"], SEED, STEPS, CFG, "euler", "normal", positive, negative, setup["latent"],
                  safety_concept=safety, sld_params=sld, disable_pbar=True)
    return out["samples"] * setup["model"].latent_scale


def pipeline_sizes(sdxl_sizes):
    if not sdxl_sizes:
        return {}
    size = (SIZES["height"], SIZES["width"])
    crop = (SIZES["crop_h"], SIZES["crop_w"])
    target = (SIZES["target_height"], SIZES["target_width"])
    return dict(original_size=size, crops_coords_top_left=crop, target_size=target, negative_original_size=size,
                negative_crops_coords_top_left=crop, negative_target_size=target)


def diffusers_pipeline(setup, sdxl_sizes=False):
    final = {}

    def on_step_end(pipe, i, t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    setup["pipe"](prompt=PROMPT, prompt_2=PROMPT_G if sdxl_sizes else None, negative_prompt=NEGATIVE,
                  num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE, width=SIZE, latents=start_latent(setup),
                  output_type="latent", callback_on_step_end=on_step_end, **pipeline_sizes(sdxl_sizes))
    return final["latents"]


@torch.no_grad()
def reference_sld_loop(setup, params):
    """Negative, positive and safety concept through diffusers' SDXL UNet each step, combined by the
    plain SLD function, stepped by diffusers' Euler scheduler."""
    pipe = setup["pipe"]
    embeds, pooled = [], []
    for text in (NEGATIVE, PROMPT, DEFAULT_SAFETY_CONCEPT):
        e, _, p, _ = pipe.encode_prompt(text, device="cpu", do_classifier_free_guidance=False)
        embeds.append(e)
        pooled.append(p)
    time_ids = pipe._get_add_time_ids((SIZE, SIZE), (0, 0), (SIZE, SIZE), torch.float32,
                                      text_encoder_projection_dim=pooled[0].shape[-1])
    added = {"text_embeds": torch.cat(pooled), "time_ids": time_ids.repeat(3, 1)}
    context = torch.cat(embeds)
    scheduler = pipe.scheduler
    latents = start_latent(setup) * scheduler.init_noise_sigma
    momentum = None
    for step, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(torch.cat([latents] * 3), t)
        eps = pipe.unet(x_in, t, encoder_hidden_states=context, added_cond_kwargs=added).sample
        uncond, cond, safety = eps.chunk(3)
        guided, momentum = sld_guidance(uncond, cond, safety, CFG, params, momentum, step)
        latents = scheduler.step(guided, t, latents).prev_sample
    return latents


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("sdxl_sizes", [False, True], ids=["CLIPTextEncode", "CLIPTextEncodeSDXL"])
def test_sdxl_cfg_equals_diffusers_sdxl_pipeline(setup, sdxl_sizes):
    assert rel_l2(ours(setup, sdxl_sizes), diffusers_pipeline(setup, sdxl_sizes)) < 1e-4


def test_the_sizes_reach_the_unet(setup):
    """Guard: the CLIPTextEncodeSDXL sizes change the result well beyond the tolerance."""
    assert rel_l2(ours(setup, True), ours(setup, False)) > 1e-3


@pytest.mark.parametrize("case", ["max", "custom"])
def test_sdxl_sld_equals_the_reference_loop(setup, case):
    params = PRESETS["max"] if case == "max" else CUSTOM
    result = ours(setup, sld=params)
    assert rel_l2(result, reference_sld_loop(setup, params)) < 1e-4
    assert rel_l2(result, ours(setup)) > 1e-3  # SLD acts: > 10× the tolerance
