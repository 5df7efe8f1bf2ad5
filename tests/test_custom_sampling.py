"""Composable sampling nodes (headless): KSamplerAdvanced and the custom-sampling blocks.

References: the closed-form schedules (Karras et al. eq. 5; SD-Turbo's timesteps on the DDPM table
computed here from the β schedule), and ComfyUI's documented identities: a KSampler run split in two
(leftover noise, then no added noise) is the whole run; SamplerCustomAdvanced fed KSampler's noise,
guider, sampler and schedule is KSampler; a final step to σ = 0 with Euler lands on the last x̂₀.
"""
import numpy as np
import pytest
import torch

from comfyui_sld.nodes.custom_sampling import (BasicGuider, BasicScheduler, CFGGuider, DisableNoise, KarrasScheduler,
                                               KSamplerAdvanced, KSamplerSelect, RandomNoise, SamplerCustom,
                                               SamplerCustomAdvanced, SDTurboScheduler, SLDGuider, SplitSigmas)
from comfyui_sld.nodes.sampling import KSampler, SLDKSampler

SEED, STEPS, CFG = 5, 6, 6.0
ACTIVE = (1000.0, 0, 0.01, 0.5, 0.7)  # custom SLD values that act at every step


@pytest.fixture(scope="module")
def parts(tiny_sampling_parts):
    return tiny_sampling_parts


def empty_latent():
    return {"samples": torch.zeros(1, 4, 8, 8)}


def ksampler(parts, sampler="euler", scheduler="normal", cfg=CFG):
    (out,) = KSampler().sample(parts["model"], SEED, STEPS, cfg, sampler, scheduler, parts["positive"],
                               parts["negative"], empty_latent(), 1.0)
    return out["samples"]


def advanced(parts, latent, add_noise, start, end, leftover, sampler="euler"):
    (out,) = KSamplerAdvanced().sample(parts["model"], add_noise, SEED, STEPS, CFG, sampler, "normal",
                                       parts["positive"], parts["negative"], latent, start, end, leftover)
    return out


def custom_advanced(parts, noise, guider, sigmas, latent, sampler="euler"):
    (sampler_value,) = KSamplerSelect().get_sampler(sampler)
    return SamplerCustomAdvanced().sample(noise, guider, sampler_value, sigmas, latent)


def basic_sigmas(parts, scheduler="normal", steps=STEPS, denoise=1.0):
    return BasicScheduler().get_sigmas(parts["model"], scheduler, steps, denoise)[0]


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_ksampler_advanced_split_in_two_is_the_whole_run(parts, sampler):
    """Exact for one-step samplers; a multistep one (dpmpp_2m) restarts its history at the split."""
    whole = ksampler(parts, sampler)
    first = advanced(parts, empty_latent(), "enable", 0, 3, "enable", sampler)
    assert not torch.allclose(first["samples"], whole, atol=1e-2)  # leftover noise: not yet an image
    second = advanced(parts, first, "disable", 3, 10000, "disable", sampler)
    torch.testing.assert_close(second["samples"], whole, rtol=1e-4, atol=1e-4)  # LATENT scale round trip


def test_ksampler_advanced_over_all_steps_is_ksampler_and_past_the_end_returns_the_input(parts):
    full = advanced(parts, empty_latent(), "enable", 0, 10000, "disable")
    assert torch.equal(full["samples"], ksampler(parts))
    latent = {"samples": torch.randn(1, 4, 8, 8), "batch_index": [0]}
    untouched = advanced(parts, latent, "enable", STEPS, 10000, "disable")
    assert untouched["samples"] is latent["samples"] and untouched["batch_index"] == [0]


def test_ending_early_without_leftover_noise_finishes_at_sigma_zero(parts):
    """end_at_step cuts the schedule; with return_with_leftover_noise disabled its last σ becomes 0."""
    cut = advanced(parts, empty_latent(), "enable", 0, 3, "disable")["samples"]
    sigmas = basic_sigmas(parts)[:4].clone()
    sigmas[-1] = 0.0
    (sampler,) = KSamplerSelect().get_sampler("euler")
    expected, _ = SamplerCustom().sample(parts["model"], True, SEED, CFG, parts["positive"], parts["negative"],
                                         sampler, sigmas, empty_latent())
    assert torch.equal(cut, expected["samples"])
    leftover = advanced(parts, empty_latent(), "enable", 0, 3, "enable")["samples"]
    assert not torch.allclose(cut, leftover, atol=1e-2)


def test_sampler_custom_advanced_with_ksamplers_parts_is_ksampler(parts):
    (noise,) = RandomNoise().get_noise(SEED)
    (guider,) = CFGGuider().get_guider(parts["model"], parts["positive"], parts["negative"], CFG)
    output, _ = custom_advanced(parts, noise, guider, basic_sigmas(parts, "karras"), empty_latent())
    assert torch.equal(output["samples"], ksampler(parts, scheduler="karras"))


@pytest.mark.parametrize("preset", ["disabled", "max", "custom"])
def test_sld_guider_headless_is_sld_ksampler(parts, preset):
    (noise,) = RandomNoise().get_noise(SEED)
    (guider,) = SLDGuider().get_guider(parts["model"], parts["positive"], parts["negative"], CFG, parts["safety"],
                                       preset, *ACTIVE)
    output, _ = custom_advanced(parts, noise, guider, basic_sigmas(parts), empty_latent())
    (expected,) = SLDKSampler().sample(parts["model"], SEED, STEPS, CFG, "euler", "normal", parts["positive"],
                                       parts["negative"], empty_latent(), 1.0, parts["safety"], preset, *ACTIVE)
    assert torch.equal(output["samples"], expected["samples"])
    if preset == "custom":  # the comparison is not blind: SLD moved the image
        assert not torch.allclose(expected["samples"], ksampler(parts), atol=1e-3)


def test_split_sigmas_with_disabled_noise_continue_the_run(parts):
    (guider,) = CFGGuider().get_guider(parts["model"], parts["positive"], parts["negative"], CFG)
    high, low = SplitSigmas().get_sigmas(basic_sigmas(parts), 2)
    assert len(high) == 3 and len(low) == STEPS - 1 and high[-1] == low[0]
    (noise,) = RandomNoise().get_noise(SEED)
    first, _ = custom_advanced(parts, noise, guider, high, empty_latent())
    (none,) = DisableNoise().get_noise()
    second, _ = custom_advanced(parts, none, guider, low, first)
    torch.testing.assert_close(second["samples"], ksampler(parts), rtol=1e-4, atol=1e-4)


def test_sampler_custom_outputs_and_its_denoised_output(parts):
    (sampler,) = KSamplerSelect().get_sampler("euler")
    sigmas = basic_sigmas(parts)
    output, denoised = SamplerCustom().sample(parts["model"], True, SEED, CFG, parts["positive"], parts["negative"],
                                              sampler, sigmas, empty_latent())
    assert torch.equal(output["samples"], ksampler(parts))
    # Euler's last step goes to σ = 0: x = x + (0 − σ)·(x − x̂₀)/σ = x̂₀.
    torch.testing.assert_close(denoised["samples"], output["samples"], rtol=1e-5, atol=1e-5)
    # Stopped early, the output still holds noise and the denoised output is the last x̂₀.
    partial, partial_denoised = SamplerCustom().sample(parts["model"], True, SEED, CFG, parts["positive"],
                                                       parts["negative"], sampler, sigmas[:3], empty_latent())
    assert not torch.allclose(partial["samples"], partial_denoised["samples"], atol=1e-2)
    # Without noise from an empty latent at full σ the sampler still runs (ComfyUI: add_noise false).
    quiet, _ = SamplerCustom().sample(parts["model"], False, SEED, CFG, parts["positive"], parts["negative"],
                                      sampler, sigmas, empty_latent())
    assert not torch.equal(quiet["samples"], output["samples"])


def test_basic_guider_is_cfg_one(parts):
    (noise,) = RandomNoise().get_noise(SEED)
    (guider,) = BasicGuider().get_guider(parts["model"], parts["positive"])
    output, _ = custom_advanced(parts, noise, guider, basic_sigmas(parts), empty_latent())
    assert torch.equal(output["samples"], ksampler(parts, cfg=1.0))


def test_an_empty_schedule_returns_the_latent(parts):
    (noise,) = RandomNoise().get_noise(SEED)
    (guider,) = CFGGuider().get_guider(parts["model"], parts["positive"], parts["negative"], CFG)
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    output, denoised = custom_advanced(parts, noise, guider, basic_sigmas(parts, denoise=0.0), latent)
    assert output["samples"] is latent["samples"] and denoised["samples"] is latent["samples"]


def ddpm_sigmas():
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) of SD's scaled-linear β schedule, in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    return np.sqrt((1 - alphas_cumprod) / alphas_cumprod)


def test_basic_scheduler_partial_denoise_is_the_tail_of_a_longer_schedule(parts):
    tail = basic_sigmas(parts, steps=4, denoise=0.5)
    assert torch.equal(tail, basic_sigmas(parts, steps=8)[-5:])
    assert len(basic_sigmas(parts, steps=4, denoise=0.0)) == 0


def test_karras_scheduler_is_karras_equation_5():
    (sigmas,) = KarrasScheduler().get_sigmas(7, 14.614642, 0.0291675, 7.0)
    ramp = np.linspace(0, 1, 7)
    expected = (14.614642 ** (1 / 7) + ramp * (0.0291675 ** (1 / 7) - 14.614642 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sigmas.numpy(), np.append(expected, 0.0), rtol=1e-6)


@pytest.mark.parametrize("steps, denoise, timesteps", [(1, 1.0, [999]), (4, 1.0, [999, 899, 799, 699]),
                                                       (2, 0.5, [499, 399]), (10, 1.0, list(range(999, 0, -100)))])
def test_sd_turbo_scheduler_takes_its_ten_distilled_timesteps(parts, steps, denoise, timesteps):
    (sigmas,) = SDTurboScheduler().get_sigmas(parts["model"], steps, denoise)
    np.testing.assert_allclose(sigmas.numpy(), np.append(ddpm_sigmas()[timesteps], 0.0), rtol=1e-5)


def test_a_composed_sld_graph_runs_headless_and_draws_the_sld_ksampler_image(tmp_path):
    """The shipped txt2img graph with its SLDKSampler replaced by RandomNoise + SLDGuider + KSamplerSelect
    + BasicScheduler → SamplerCustomAdvanced saves the same pixels (validated and run by `sld run`'s
    executor, so the new socket types connect)."""
    import json
    from pathlib import Path

    from PIL import Image

    from comfyui_sld.headless.run import Executor
    from comfyui_sld.nodes.context import Runtime
    from comfyui_sld.nodes.folders import ModelFolders

    workflows = Path(__file__).resolve().parents[1] / "workflows"
    prompt = json.loads((workflows / "api" / "sld_txt2img.json").read_text())
    sampler = prompt["6"]["inputs"]
    sampler["steps"] = 12
    composed = json.loads(json.dumps(prompt))
    composed["6"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["20", 0], "guider": ["21", 0], "sampler": ["22", 0], "sigmas": ["23", 0],
        "latent_image": sampler["latent_image"]}}
    composed["20"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": sampler["seed"]}}
    sld = {k: v for k, v in sampler.items() if k.startswith("sld_") or k == "safety_concept"}
    composed["21"] = {"class_type": "SLDGuider", "inputs": {
        "model": sampler["model"], "positive": sampler["positive"], "negative": sampler["negative"],
        "cfg": sampler["cfg"], **sld}}
    composed["22"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler["sampler_name"]}}
    composed["23"] = {"class_type": "BasicScheduler", "inputs": {
        "model": sampler["model"], "scheduler": sampler["scheduler"], "steps": 12, "denoise": 1.0}}

    images = []
    for name, graph in (("ksampler", prompt), ("composed", composed)):
        runtime = Runtime(models=ModelFolders(tmp_path / "models"), output_dir=tmp_path / name, device="cpu")
        result = Executor(runtime, progress=False).run(graph)
        [image] = result.images
        with Image.open(Path(image["path"])) as png:
            images.append(np.asarray(png.convert("RGB")).copy())
    assert np.array_equal(images[0], images[1])
