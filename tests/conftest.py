"""Shared fixtures: tiny seeded random SD1.x components (built once per session, float32, CPU)."""
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_components():
    from comfyui_sld.sld_core.demo import build_tiny_components

    return build_tiny_components(seed=0)

