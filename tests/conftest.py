"""Shared fixtures: tiny seeded random SD1.x components (built once per session, float32, CPU).

They live here, not in the package: nothing a user runs needs random weights."""
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


TINY_CONTEXT_DIM = 32


def tiny_unet_config():
    # attention_head_dim=8 is diffusers' name for 8 heads, SD1's fixed head count (config_inference.py).
    return dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TINY_CONTEXT_DIM,
        attention_head_dim=8, norm_num_groups=32,
    )


def tiny_vae_config():
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=32, sample_size=64, scaling_factor=0.18215,
    )


def tiny_text_config():
    # vocab and special ids of the real CLIP tokenizer, so the shipped tokenizer drives it. One head:
    # the head count a single-file checkpoint implies for a text encoder narrower than CLIP's 64-wide
    # heads (models/config_inference.py), so the tiny model round-trips through a .safetensors file.
    return dict(
        vocab_size=49408, hidden_size=TINY_CONTEXT_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=1, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, layer_norm_eps=1e-5, hidden_act="quick_gelu", projection_dim=TINY_CONTEXT_DIM,
    )


def build_tiny_components(seed=0):
    """Seeded random diffusers/transformers modules: {"unet", "vae", "text_encoder"} in float32, eval mode.

    The SD1.x architecture (same block types, cross-attention to CLIP-style embeddings, the real CLIP
    tokenizer), only narrower, so a whole run takes milliseconds."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config())
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**tiny_vae_config())
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config()))
    return {m: c.eval() for m, c in dict(unet=unet, vae=vae, text_encoder=text_encoder).items()}


@pytest.fixture(scope="session")
def tiny_components():
    """Shared by the whole session: tests must not modify these modules (build their own copy)."""
    return build_tiny_components(seed=0)


@pytest.fixture(scope="session")
def tiny_sampling_parts(tiny_components):
    """The tiny SD1 model with three encoded texts: `positive`, `negative` and an SLD `safety` concept."""
    from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
    from comfyui_sld.sld_core.models.model import Model

    clip = Clip(load_clip_tokenizer(), tiny_components["text_encoder"])
    return dict(model=Model(tiny_components["unet"]), positive=clip.encode("a green square"),
                negative=clip.encode("noise"), safety=clip.encode("a red circle"))


@pytest.fixture(scope="session")
def tiny_configs():
    """The tiny components' diffusers/transformers configs, for tests that build variants of them."""
    return dict(unet=tiny_unet_config(), vae=tiny_vae_config(), text_encoder=tiny_text_config())


@pytest.fixture
def fresh_tiny_components():
    """A private copy of the tiny components (seed 0), for tests that change a module (layout, compile)."""
    return build_tiny_components(seed=0)


def pytest_terminal_summary(terminalreporter):
    """Say out loud that the real-ComfyUI checks did not run (they are opt-in, never silently skipped)."""
    if not os.environ.get("SLD_COMFYUI_DIR"):
        terminalreporter.write_line(
            "NOT RUN: tests/test_comfyui.py, test_comfy_bridge.py::test_the_stand_in_agrees_with_a_real_comfyui and "
            "test_conditioning_ops.py::test_the_averages_equal_comfyuis_own_calc_cond_batch "
            "(real ComfyUI checks) - set SLD_COMFYUI_DIR=/path/to/ComfyUI (and SLD_COMFYUI_PYTHON) to run "
            "scripts/comfyui-check, tests/comfy_standin/agreement.py and tests/comfyui_conditioning_reference.py",
            yellow=True, bold=True)
