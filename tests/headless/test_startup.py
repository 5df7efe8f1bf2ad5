"""Start-up: the commands that run no model import no torch, diffusers or transformers (they are most
of a run's start-up time; bench/RESULTS.md, "One-shot runs"). Checked in a fresh interpreter each."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "onnxruntime", "scipy")

PROBE = """
import contextlib, io, json, sys
from comfyui_sld.headless.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main({argv!r})
    except SystemExit as exit:
        code = exit.code
print(json.dumps({{"code": code, "loaded": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _probe(argv, cwd):
    done = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["--version"],
    ["nodes"],
    ["nodes", "SLDKSampler"],
    ["validate", str(ROOT / "workflows" / "sld_txt2img.json")],
    ["validate", str(ROOT / "workflows" / "api" / "sld_img2img.json")],
    ["validate", str(ROOT / "workflows" / "api" / "sld_txt2img_checked.json")],
])
def test_commands_that_run_no_model_import_no_torch(argv, tmp_path):
    result = _probe(argv, tmp_path)
    assert result["code"] in (0, None), result
    assert result["loaded"] == [], f"sld {' '.join(argv)} imported {result['loaded']}"


def test_an_invalid_workflow_is_reported_without_torch_too(tmp_path):
    workflow = json.loads((ROOT / "workflows" / "api" / "sld_txt2img.json").read_text())
    workflow["6"]["inputs"]["sampler_name"] = "no_such_sampler"
    file = tmp_path / "bad.json"
    file.write_text(json.dumps(workflow))
    result = _probe(["validate", str(file)], tmp_path)
    assert result["code"] == 2 and result["loaded"] == [], result


def test_run_does_import_torch(tmp_path):
    """The probe can see an import (the check above is not blind): a real run loads torch."""
    result = _probe(["run", str(ROOT / "workflows" / "api" / "sld_txt2img.json"), "--quiet", "--set", "6.steps=1",
                     "--output-dir", str(tmp_path / "out")], tmp_path)
    assert result["code"] == 0 and "torch" in result["loaded"], result
