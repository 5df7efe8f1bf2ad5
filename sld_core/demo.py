"""The embedded default model: tiny, seeded, random-weight SD1.x components built in-process.

Until a trained demo model ships, this is what `sld run` uses on a fresh machine and what the tests
build. Its images are noise; it proves the plumbing, not SLD's effect. The architecture is SD1.x
(same block types, cross-attention to CLIP-L-style embeddings, the real CLIP tokenizer), only narrower.
"""
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



def demo_vae_config():
    """The demo model's VAE: like `tiny_vae_config` but with SD's four levels, so it maps pixels to
    latents at SD's 1/8 scale (the two-level test VAE would turn a 64×64 latent request into 16×16)."""
    return dict(tiny_vae_config(), block_out_channels=(32, 32, 64, 64),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def load_demo(device="auto", seed=0):
    """The embedded default model as the runtime's ``(Model, Clip, Vae)``, float32 on ``device``.

    This is what the checkpoint name ``sld_demo.safetensors`` loads when no file of that name exists;
    it needs no files or network (the CLIP tokenizer ships in the package). Random weights: its images
    are noise.
    """
    from diffusers import AutoencoderKL

    from .device import resolve_device
    from .models.clip import Clip, load_clip_tokenizer
    from .models.model import Model
    from .models.vae import Vae

    device = resolve_device(device)
    parts = build_tiny_components(seed)
    torch.manual_seed(seed + 3)
    parts["vae"] = AutoencoderKL(**demo_vae_config()).eval()
    parts = {name: module.to(device).requires_grad_(False) for name, module in parts.items()}
    model = Model(parts["unet"], latent_scale=parts["vae"].config.scaling_factor)
    return model, Clip(load_clip_tokenizer(), parts["text_encoder"]), Vae(parts["vae"])
