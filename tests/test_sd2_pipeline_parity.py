"""End to end on a tiny seeded SD2.x, as 768-v (v-prediction) and 512-base (ε): `ksample` against diffusers.

SLD disabled: the final latents equal diffusers' ``StableDiffusionPipeline`` with the matching
``prediction_type`` (Euler, linspace spacing). Its text encoder is the diffusers export of ours: ViT-H
without its last layer, whose last hidden state is ComfyUI's normed penultimate one. SLD on: equal to a
reference loop that turns the UNet's v into ε with the textbook identity ε = √ᾱ·v + √(1−ᾱ)·x_t before
the plain SLD function, then steps diffusers' Euler scheduler on ε.
"""

import pytest

import tiny_families  # tests/tiny_families.py (pytest's pythonpath in pyproject.toml)
import torch

from comfyui_sld.sld_core.guidance import DEFAULT_SAFETY_CONCEPT, PRESETS, SLDParams, sld_guidance
from comfyui_sld.sld_core.ksample import ksample
from comfyui_sld.sld_core.model_sampling import DiscreteSchedule
from comfyui_sld.sld_core.models.clip import TOKENIZER_DIR, Clip
from comfyui_sld.sld_core.models.families import CLIP_H_SD2
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.noise import prepare_noise

PROMPT, NEGATIVE = "a red circle on a blue background, painting", "blurry, low quality"
SEED, STEPS, SIZE, CFG = 1234, 10, 32, 7.5
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
CUSTOM = SLDParams(guidance_scale=1000.0, warmup_steps=0, threshold=0.01, momentum_scale=0.3, momentum_beta=0.4)


@pytest.fixture(scope="module")
def setup():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    parts = tiny_families.build("SD2.x")
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token="!")
    full = parts["text_encoder"]
    config = CLIPTextConfig(**{**full.config.to_dict(), "num_hidden_layers": full.config.num_hidden_layers - 1})
    exported = CLIPTextModel(config).eval()  # diffusers' SD2 text encoder: no last layer, no projection
    state = {k.removeprefix("text_model."): v for k, v in full.state_dict().items()}
    exported.load_state_dict({k: v for k, v in state.items() if k in exported.state_dict()})
    clip = Clip.for_spec(tokenizer, full, CLIP_H_SD2)  # a single file's ViT-H, run as ComfyUI runs it
    conds = {text: clip.encode(text) for text in (PROMPT, NEGATIVE, DEFAULT_SAFETY_CONCEPT)}
    latent = {"samples": torch.zeros(1, 4, SIZE // 8, SIZE // 8)}
    return dict(parts=parts, tokenizer=tokenizer, exported=exported, conds=conds, latent=latent)


def scheduler(prediction):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**BETAS, timestep_spacing="linspace", steps_offset=1, prediction_type=prediction)


def model(setup, prediction):
    return Model(setup["parts"]["unet"], DiscreteSchedule(prediction_type=prediction))


def start_latent(setup, prediction):
    s = scheduler(prediction)
    s.set_timesteps(STEPS)
    sigma_max = model(setup, prediction).schedule.sigma_max
    return prepare_noise(setup["latent"]["samples"], SEED) * (1 + sigma_max**2) ** 0.5 / s.init_noise_sigma


def ours(setup, prediction, sld=None):
    conds = setup["conds"]
    m = model(setup, prediction)
    out = ksample(m, SEED, STEPS, CFG, "euler", "normal", conds[PROMPT], conds[NEGATIVE], setup["latent"],
                  safety_concept=conds[DEFAULT_SAFETY_CONCEPT] if sld else None, sld_params=sld, disable_pbar=True)
    return out["samples"] * m.latent_scale


def diffusers_pipeline(setup, prediction):
    from diffusers import StableDiffusionPipeline

    p = setup["parts"]
    pipe = StableDiffusionPipeline(vae=p["vae"], text_encoder=setup["exported"], tokenizer=setup["tokenizer"],
                                   unet=p["unet"], scheduler=scheduler(prediction), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    final = {}

    def on_step_end(pipe, i, t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    pipe(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS, guidance_scale=CFG, height=SIZE,
         width=SIZE, latents=start_latent(setup, prediction), output_type="latent", callback_on_step_end=on_step_end)
    return final["latents"]


@torch.no_grad()
def reference_sld_loop(setup, prediction, params):
    unet, tokenizer, encoder = setup["parts"]["unet"], setup["tokenizer"], setup["exported"]
    ids = tokenizer([NEGATIVE, PROMPT, DEFAULT_SAFETY_CONCEPT], padding="max_length", max_length=77,
                    truncation=True, return_tensors="pt").input_ids
    context = encoder(ids)[0]
    stepper = scheduler("epsilon")  # steps on the ε the v output implies
    stepper.set_timesteps(STEPS)
    alphas_cumprod = stepper.alphas_cumprod
    latents = start_latent(setup, prediction) * stepper.init_noise_sigma
    momentum = None
    for step, t in enumerate(stepper.timesteps):
        x_t = stepper.scale_model_input(torch.cat([latents] * 3), t)  # VP-space x_t = x/√(σ²+1)
        out = unet(x_t, t, encoder_hidden_states=context).sample
        if prediction == "v_prediction":
            a = alphas_cumprod[int(t)]
            out = a**0.5 * out + (1 - a) ** 0.5 * x_t
        uncond, cond, safety = out.chunk(3)
        guided, momentum = sld_guidance(uncond, cond, safety, CFG, params, momentum, step)
        latents = stepper.step(guided, t, latents).prev_sample
    return latents


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"], ids=["768-v", "512-base"])
def test_sd2_cfg_equals_diffusers_pipeline(setup, prediction):
    assert rel_l2(ours(setup, prediction), diffusers_pipeline(setup, prediction)) < 1e-4


def test_the_prediction_type_matters(setup):
    assert rel_l2(ours(setup, "v_prediction"), ours(setup, "epsilon")) > 1e-2


@pytest.mark.parametrize("case", ["max", "custom"])
@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"], ids=["768-v", "512-base"])
def test_sd2_sld_equals_the_reference_loop(setup, prediction, case):
    params = PRESETS["max"] if case == "max" else CUSTOM
    result = ours(setup, prediction, params)
    assert rel_l2(result, reference_sld_loop(setup, prediction, params)) < 1e-4
    assert rel_l2(result, ours(setup, prediction)) > 1e-3  # SLD acts: > 10× the tolerance
