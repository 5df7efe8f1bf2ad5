"""bench/bench_sdxl.py and scripts/make_random_sdxl.py, proven on tiny SDXL files (the full-size runs
are the benchmark's, not the suite's): the maker's layout of full-size SDXL (from meta-device modules)
and its streamed writer, and the benchmark end to end."""
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def maker():
    return load_script(ROOT / "scripts" / "make_random_sdxl.py", "make_random_sdxl")


def tiny_configs():
    return {"unet": tiny_families.unet_config("SDXL"),
            "vae": dict(tiny_families.tiny_vae_config(), scaling_factor=0.13025),
            "text_encoder": tiny_families.tiny_text_config(),
            "text_encoder_2": tiny_families.open_clip_text_config(tiny_families.G_WIDTH, tiny_families.G_PROJECTION)}


def test_the_full_size_layout_is_sdxl_base(maker):
    entries = maker.layout()
    params = {prefix: sum(math.prod(s) for k, s in entries if k.startswith(prefix))
              for prefix in ("model.diffusion_model.", "conditioner.embedders.0.", "conditioner.embedders.1.")}
    assert params["model.diffusion_model."] == 2_567_463_684  # SDXL base's UNet (test_model_families)
    assert params["conditioner.embedders.0."] == 123_060_480  # CLIP-L, position ids not counted
    total = sum(math.prod(s) for _, s in entries) * 2
    assert 6.8e9 < total < 7.0e9  # float16 bytes


def test_the_streamed_file_loads_as_sdxl_and_is_seeded(maker, tmp_path):
    from safetensors import safe_open

    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    entries = maker.layout(tiny_configs())
    a, b, c = (maker.write(tmp_path / name, entries, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert a == b == c
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() != (tmp_path / "c").read_bytes()
    with safe_open(str(tmp_path / "a"), "pt") as f:
        assert sorted(f.keys()) == [k for k, _ in entries]
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    (tmp_path / "a").rename(tmp_path / "a.safetensors")
    model, clip, vae = load_checkpoint(tmp_path / "a.safetensors", device="cpu")
    assert model.family == "SDXL" and model.prediction_type == "epsilon"
    unet = model.unet
    assert torch.equal(unet.conv_norm_out.weight, torch.ones_like(unet.conv_norm_out.weight))
    assert not unet.conv_in.bias.any()
    bound = 1 / math.sqrt(math.prod(unet.conv_in.weight.shape[1:]))
    assert 0.9 * bound < float(unet.conv_in.weight.abs().max()) <= bound * 1.001


def test_bench_sdxl_runs_end_to_end(maker, tmp_path, capsys, monkeypatch):
    maker.write(tmp_path / "tiny_sdxl.safetensors", maker.layout(tiny_configs()))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench = load_script(ROOT / "bench" / "bench_sdxl.py", "bench_sdxl")
    bench.main(["--checkpoint", str(tmp_path / "tiny_sdxl.safetensors"), "--size", "64", "--steps", "2", "--reps", "1"])
    out = capsys.readouterr().out
    results = {r["bench"]: r for r in (json.loads(line[len("RESULT "):]) for line in out.splitlines()
                                       if line.startswith("RESULT "))}
    assert set(results) == {"sdxl_vs_diffusers", "sdxl_sld_vs_cfg"}
    assert all(r["ratio"][1] > 0 and r["size"] == 64 and r["steps"] == 2 for r in results.values())
    # Both sides did the same job: the final latents agree (the parity tests hold them to 1e-4).
    assert results["sdxl_vs_diffusers"]["latent_rel_l2"] < 1e-3
    assert re.search(r"ours, SLD medium / ours, CFG: [\d.]+ \(", out)
    sys.modules.pop("harness", None)
