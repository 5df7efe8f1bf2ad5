"""Shared fixtures: tiny seeded random SD1.x components (built once per session, float32, CPU)."""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and it keeps timings immune to other processes
    on a shared CPU (OpenMP threads spinning against each other cost 100× there)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_components():
    from comfyui_sld.sld_core.demo import build_tiny_components

    return build_tiny_components(seed=0)


def pytest_terminal_summary(terminalreporter):
    """Say out loud that the real-ComfyUI checks did not run (they are opt-in, never silently skipped)."""
    if not os.environ.get("SLD_COMFYUI_DIR"):
        terminalreporter.write_line(
            "NOT RUN: tests/test_comfyui.py (real ComfyUI checks) - set SLD_COMFYUI_DIR=/path/to/ComfyUI "
            "(and SLD_COMFYUI_PYTHON) to run scripts/comfyui-check", yellow=True, bold=True)
