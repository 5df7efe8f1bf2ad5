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


@pytest.mark.skipif(not COMFYUI_DIR, reason="needs a real ComfyUI: set SLD_COMFYUI_DIR")
def test_workflows_in_comfyui_equal_sld_run(tmp_path):
    report = tmp_path / "report.json"
    cmd = [sys.executable, str(SCRIPT), COMFYUI_DIR, "--report", str(report),
           "--python", os.environ.get("SLD_COMFYUI_PYTHON", sys.executable)]
    if os.environ.get("SLD_COMFYUI_CHECKPOINT"):
        cmd += ["--checkpoint", os.environ["SLD_COMFYUI_CHECKPOINT"]]
    done = subprocess.run(cmd, capture_output=True, text=True)
    result = json.loads(report.read_text())
    assert done.returncode == 0, result["problems"]
    assert result["parity"]["sld_disabled_vs_ksampler"] == 0
    assert all(w["max_diff"] <= 2 for w in result["workflows"].values())
