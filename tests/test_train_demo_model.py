"""The demo-model training script's pieces: its sizes load through the single-file loader within the
size budget, its noise schedule is the runtime's, and folding the latent scale leaves the VAE exact."""
import importlib.util
import types
from pathlib import Path

import pytest
import torch

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
    pixels, _ = script.scene_batch(range(2))
    pixels = pixels.double()
    with torch.no_grad():
        before = vae.decode(vae.encode(pixels).latent_dist.mean).sample
        script.fold_latent_scale(vae, pixels)
        latents = vae.encode(pixels).latent_dist.mean
        after = vae.decode(latents).sample
    torch.testing.assert_close(after, before)
    assert latents.std().item() * script.SD1_LATENT_SCALE == pytest.approx(1.0, rel=1e-6)
    vae.float()
