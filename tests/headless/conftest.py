"""Fixtures of the headless tests: the shipped workflows, and the `sld` CLI run in this process."""
import json
from pathlib import Path

import pytest

from comfyui_sld.headless.cli import main

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
INPUT_DIR = WORKFLOWS / "input"
NAMES = ["sld_txt2img", "sld_compare", "sld_img2img"]


def load_api(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """An executor on the embedded demo model for one test module (the checkpoint loads once; a second
    run that changes one input re-runs only what depends on it), reading workflows/input/."""
    from comfyui_sld.headless.run import Executor
    from comfyui_sld.nodes.context import Runtime
    from comfyui_sld.nodes.folders import ModelFolders

    folder = tmp_path_factory.mktemp("demo")
    runtime = Runtime(models=ModelFolders(folder / "models"), input_dir=INPUT_DIR, output_dir=folder / "out",
                      device="cpu")
    return Executor(runtime, progress=False)


def run_cli(capsys, *args):
    """(exit code, stdout, stderr) of `sld ARGS` run in this process."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(folder):
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class Workflows:
    """The shipped workflow files and helpers, as one fixture object."""

    root = WORKFLOWS
    input_dir = INPUT_DIR
    names = NAMES
    load_api = staticmethod(load_api)
    files_under = staticmethod(files_under)

    def __init__(self, capsys):
        self._capsys = capsys

    def cli(self, *args):
        return run_cli(self._capsys, *args)


@pytest.fixture
def wf(capsys):
    return Workflows(capsys)
