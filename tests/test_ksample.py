"""`ksample` as a whole: img2img against diffusers, seeds and batches, and its input errors."""
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.ksample import ksample
from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
from comfyui_sld.sld_core.models.model import Model

PROMPT, NEGATIVE = "a green square", "noise"


@pytest.fixture(scope="module")
def parts(tiny_components):
    tokenizer = load_clip_tokenizer()
    clip = Clip(tokenizer, tiny_components["text_encoder"])
    return dict(model=Model(tiny_components["unet"]), tokenizer=tokenizer, components=tiny_components,
                positive=clip.encode(PROMPT), negative=clip.encode(NEGATIVE))


def run(parts, latent, seed=7, steps=4, sampler="euler", scheduler="normal", denoise=1.0, cfg=6.0):
    return ksample(parts["model"], seed, steps, cfg, sampler, scheduler, parts["positive"], parts["negative"],
                   latent, denoise=denoise, disable_pbar=True)["samples"]


def test_img2img_denoise_equals_diffusers_img2img(parts):
    """ComfyUI's denoise d: sigmas of int(steps/d) steps, last steps+1 kept, x = latent + noise·σ₀.
    With steps=6, d=0.6 that is the schedule of diffusers' img2img at 10 steps and strength 0.6."""
    model, c = parts["model"], parts["components"]
    start = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(11))  # unscaled LATENT
    ours = run(parts, {"samples": start}, seed=5, steps=6, denoise=0.6) * model.latent_scale

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="linspace", steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=parts["tokenizer"],
                                          unet=c["unet"], scheduler=scheduler, safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    final = {}

    def keep(pipe, i, t, kw):
        final["latents"] = kw["latents"]
        return kw

    # A 4-channel `image` is taken as (scaled) latents; ComfyUI's seed rule is a CPU generator's randn.
    pipe(PROMPT, image=start * model.latent_scale, strength=0.6, num_inference_steps=10, guidance_scale=6.0,
         negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(5), output_type="latent",
         callback_on_step_end=keep)
    theirs = final["latents"]
    assert ((ours - theirs).norm() / theirs.norm()).item() < 1e-4
    assert ((ours - start * model.latent_scale).norm() / theirs.norm()).item() > 0.05  # it did sample


def test_denoise_zero_returns_the_input(parts):
    latent = {"samples": torch.randn(1, 4, 4, 4), "batch_index": [3]}
    out = ksample(parts["model"], 1, 4, 6.0, "euler", "normal", parts["positive"], parts["negative"], latent,
                  denoise=0.0, disable_pbar=True)
    assert torch.equal(out["samples"], latent["samples"]) and out["batch_index"] == [3]


def test_same_seed_same_result_and_batch_is_one_draw(parts):
    empty = {"samples": torch.zeros(2, 4, 4, 4)}
    a, b = run(parts, empty), run(parts, empty)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # one draw of the whole batch: the two samples differ
    assert not torch.allclose(run(parts, empty, seed=8), a)


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde", "dpmpp_sde", "heun", "uni_pc"])
def test_every_sampler_runs_deterministically_from_the_seed(parts, sampler):
    empty = {"samples": torch.zeros(1, 4, 4, 4)}
    a, b = run(parts, empty, sampler=sampler, steps=3), run(parts, empty, sampler=sampler, steps=3)
    assert torch.equal(a, b) and torch.isfinite(a).all()


def test_wrong_latent_channels_is_a_clear_error(parts):
    with pytest.raises(InvalidInputError, match="expects 4 latent channels, got 16"):
        run(parts, {"samples": torch.zeros(1, 16, 4, 4)})
    with pytest.raises(InvalidInputError, match="expected a LATENT"):
        run(parts, {"samples": torch.zeros(4, 4, 4)})


def test_unknown_sampler_and_scheduler_list_the_valid_names(parts):
    empty = {"samples": torch.zeros(1, 4, 4, 4)}
    with pytest.raises(InvalidInputError, match="unknown sampler_name 'euler_fast'.*euler, euler_ancestral"):
        run(parts, empty, sampler="euler_fast")
    with pytest.raises(InvalidInputError, match="karras"):
        run(parts, empty, scheduler="karas")
