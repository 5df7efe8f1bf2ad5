"""Packaging promises: requirements.txt (what ComfyUI-Manager installs) matches pyproject, minus torch."""
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

ROOT = Path(__file__).resolve().parents[1]


def normalise(requirement):
    return requirement.split("#")[0].replace(" ", "").lower()


def test_requirements_txt_matches_pyproject_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {normalise(r) for r in project["dependencies"]}
    listed = {normalise(line) for line in (ROOT / "requirements.txt").read_text().splitlines()} - {""}
    assert not any(r.startswith("torch") and not r.startswith("torchsde") for r in listed), "never pin torch for ComfyUI"
    assert listed == {r for r in declared if not (r.startswith("torch>") or r == "torch")}
