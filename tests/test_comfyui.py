"""Against a real ComfyUI (opt-in): `scripts/comfyui-check` must pass.

Set SLD_COMFYUI_DIR to a ComfyUI checkout (and SLD_COMFYUI_PYTHON to the Python of its environment,
if not this one). It takes minutes on a CPU (full-size SD1.5, random weights). Without the variable
the test is reported as not run, by name, in the terminal summary (tests/conftest.py).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMFYUI_DIR = os.environ.get("SLD_COMFYUI_DIR")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "comfyui-check"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The JSON report of one comfyui-check run (shared by the tests below)."""
    path = tmp_path_factory.mktemp("comfyui") / "report.json"
    cmd = [sys.executable, str(SCRIPT), COMFYUI_DIR, "--report", str(path),
           "--python", os.environ.get("SLD_COMFYUI_PYTHON", sys.executable)]
    if os.environ.get("SLD_COMFYUI_CHECKPOINT"):
        cmd += ["--checkpoint", os.environ["SLD_COMFYUI_CHECKPOINT"]]
    done = subprocess.run(cmd, capture_output=True, text=True)
    result = json.loads(path.read_text())
    result["returncode"] = done.returncode
    return result


needs_comfyui = pytest.mark.skipif(not COMFYUI_DIR, reason="needs a real ComfyUI: set SLD_COMFYUI_DIR")


@needs_comfyui
def test_workflows_in_comfyui_equal_sld_run(report):
    assert report["returncode"] == 0, report["problems"]
    assert report["parity"]["sld_disabled_vs_ksampler"] == 0
    assert all(w["max_diff"] <= 2 for w in report["workflows"].values())


@needs_comfyui
def test_sld_loader_outputs_work_in_comfyuis_own_nodes(report):
    """Issue 16 point 2: inside ComfyUI, Load Checkpoint (SLD) gives ComfyUI's own MODEL/CLIP/VAE, so
    LoraLoader, CLIPSetLastLayer, CLIPTextEncode, KSampler and VAEDecode/Encode give exactly the images
    they give on ComfyUI's Load Checkpoint."""
    native = report["native_outputs"]
    assert native["sld_loader_vs_core_loader"] == {"ksampler": 0, "vae_roundtrip": 0}
    assert native["lora_keys_not_loaded"] == 0
    assert native["lora_and_clip_skip_vs_plain"] > 0  # the LoRA and clip skip really acted


@needs_comfyui
def test_links_the_editor_refuses_are_refused_by_type(report):
    miswired = report["miswired"]
    assert len(miswired) >= 4
    for label, result in miswired.items():
        assert result["http_status"] == 400, label
        assert [e[1] for e in result["errors"]] == ["return_type_mismatch"], label


@needs_comfyui
def test_demo_model_runs_in_comfyuis_nodes_as_headless(report):
    demo = report["demo_model"]
    assert set(demo["per_output"]) == {"demo_sld_medium", "demo_ksampler", "demo_vae_roundtrip"}
    assert demo["max_diff"] is not None and demo["max_diff"] <= report["tolerance"]
