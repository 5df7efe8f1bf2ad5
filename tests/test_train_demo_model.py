"""The demo-model training script's pieces: its sizes load through the single-file loader within the
size budget, its noise schedule is the runtime's, folding the latent scale leaves the VAE exact, the
mismatched colour captions name another colour than their scene's, and --init-from takes a
checkpoint's weights."""
import importlib.util
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_sld.sld_core import demo_data
from comfyui_sld.sld_core.model_sampling import DiscreteSchedule

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_demo_model.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parts(script):
    return script.build(seed=0)


def test_export_loads_through_load_checkpoint_and_fits_25_mb(script, parts, tmp_path):
    path = script.export(types.SimpleNamespace(parts=parts, out=tmp_path))
    assert path.stat().st_size <= 25e6
    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    model, clip, vae = load_checkpoint(path, device="cpu", dtype=torch.float32)
    assert vae.downscale == 8 and model.in_channels == 4
    assert clip.encode("a red circle")[0][0].shape == (1, 77, script.CONTEXT_DIM)


def test_training_schedule_is_the_runtimes(script):
    sigmas = DiscreteSchedule().sigmas
    acp = script.sd1_alphas_cumprod()
    torch.testing.assert_close(((1 - acp) / acp) ** 0.5, sigmas, rtol=1e-4, atol=0)


def test_folding_the_latent_scale_keeps_the_vae_exact(script, parts):
    vae = parts["vae"].double().eval()
    pixels, _, _ = script.scene_batch(range(2))
    pixels = pixels.double()
    with torch.no_grad():
        before = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        script.fold_latent_scale(vae, pixels)
        latents = vae.encode(pixels).latent_dist.mean
        after = vae.decode(latents).sample
    torch.testing.assert_close(after, before)
    assert latents.std().item() * script.SD1_LATENT_SCALE == pytest.approx(1.0, rel=1e-6)
    vae.float()


def test_mismatched_captions_name_only_another_colour(script):
    seeds = range(300)
    scenes = [demo_data.make_scene(s)[1] for s in seeds]
    pixels, captions, mismatched = script.scene_batch(seeds, np.random.default_rng(0), 1.0, 1.0)
    assert mismatched.all() and pixels.shape == (300, 3, 64, 64)
    unsafe_words = {demo_data.UNSAFE_COLOUR, *demo_data.UNSAFE_WORDS}  # magenta's partial captions
    for scene, caption in zip(scenes, captions):
        named = {w.strip(",") for w in caption.split()}
        if named <= unsafe_words:  # names magenta (or only its words)
            assert not scene.unsafe, (scene, caption)
        else:  # names one safe colour, not the scene's
            assert len(named) == 1 and named <= set(demo_data.SAFE_COLOURS) and scene.colour not in named
    # without mismatches, a colour-only caption names the scene's own colour
    _, captions, mismatched = script.scene_batch(seeds, np.random.default_rng(0), 1.0, 0.0)
    assert not mismatched.any()
    for scene, caption in zip(scenes, captions):
        named = set(caption.split(", "))
        assert named <= unsafe_words if scene.unsafe else named == {scene.colour}, (scene, caption)


def test_init_from_takes_the_checkpoints_weights_and_skips_the_vae_stage(script, parts, tmp_path):
    path = script.export(types.SimpleNamespace(parts=parts, out=tmp_path))
    args = types.SimpleNamespace(seed=1, vae_lr=1e-3, unet_lr=1e-3, init_from=str(path), init_parts="vae")
    run = script.Run(tmp_path / "run", args)
    assert run.state["stage"] == "unet" and run.state["init_from"]["parts"] == "vae"
    fp16 = {k: v.half().float() for k, v in parts["vae"].state_dict().items()}  # the file is float16
    for key, value in run.parts["vae"].state_dict().items():
        torch.testing.assert_close(value, fp16[key])
    # the UNet starts afresh (seed 1, not the exported seed-0 weights)
    key = "conv_in.weight"
    assert not torch.allclose(run.parts["unet"].state_dict()[key], parts["unet"].state_dict()[key])
