"""The small models that need no downloads: the trained demo model the package ships (the default
checkpoint on a fresh machine) and the tiny seeded random-weight SD1.x components the tests build.

Both are the SD1.x architecture (same block types, cross-attention to CLIP-style embeddings, the real
CLIP tokenizer), only narrower. The demo model and its concept checker are trained on the procedural
scenes of `demo_data` by scripts/train_demo_model.py and scripts/train_demo_checker.py; their
settings and loss curves lie beside them in demo_assets/.
"""
from pathlib import Path

import torch

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
    """Seeded random diffusers/transformers modules: {"unet", "vae", "text_encoder"} in float32, eval mode."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config())
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**tiny_vae_config())
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config()))
    return {m: c.eval() for m, c in dict(unet=unet, vae=vae, text_encoder=text_encoder).items()}



DEMO_ASSETS = Path(__file__).resolve().parent / "demo_assets"
DEMO_CHECKPOINT_FILE = DEMO_ASSETS / "sld_demo.safetensors"
DEMO_CHECKER_DIR = DEMO_ASSETS / "sld_demo_checker"
DEMO_PROMPTS = DEMO_ASSETS / "demo_prompts.csv"
# The demo model's guidance scale. Its text conditioning is strong (a caption fixes most of a simple
# scene), so SD's 7.5 overshoots: CFG saturates colours and SLD's safety term, which CFG scales too,
# re-draws the scene. At 2.0 it draws the asked shape as often and SLD keeps it (sld_demo_training.json).
DEMO_CFG = 2.0


def load_demo(device="auto", dtype=None, compile=False):
    """The embedded default model, trained on `demo_data` scenes (scripts/train_demo_model.py), as the
    runtime's ``(Model, Clip, Vae)``: float32 on the CPU, the device's default dtype elsewhere. It is
    an ordinary single-file checkpoint and loads through the same loader as users' checkpoints."""
    from .models.checkpoint import load_checkpoint

    return load_checkpoint(DEMO_CHECKPOINT_FILE, device=device, dtype=dtype, compile=compile)
