"""Tiny seeded SD2.x / SDXL / SDXL-refiner components (diffusers + transformers modules, float32, CPU).

The families' architectures, only narrower, following the shape-inference rules of
``sld_core/models/config_inference.py`` (64-wide UNet heads, so one head below 64; 256-wide SDXL size
embeddings; the real CLIP vocabulary so the shipped tokenizer drives the text encoders).

Not a test module: test files load it by path (the suite imports with --import-mode=importlib, so
tests/ is not on sys.path)."""
import torch

L_WIDTH, G_WIDTH, G_PROJECTION, H_WIDTH = 32, 64, 48, 64


def tiny_text_config():
    # conftest.tiny_text_config: CLIP-L's vocabulary and special ids, one head, quick-GELU
    return dict(vocab_size=49408, hidden_size=L_WIDTH, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=1, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407, layer_norm_eps=1e-5, hidden_act="quick_gelu", projection_dim=L_WIDTH)


def tiny_vae_config():
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                layers_per_block=1, norm_num_groups=32, sample_size=64, scaling_factor=0.18215)


def open_clip_text_config(width, projection, layers=3):
    # An OpenCLIP tower as transformers runs it: GELU, 64-wide heads, its own projection.
    return dict(tiny_text_config(), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                num_attention_heads=max(width // 64, 1), hidden_act="gelu", projection_dim=projection, pad_token_id=0)


def unet_config(family):
    common = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=32,
                  use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0)
    if family == "SD2.x":
        return dict(common, block_out_channels=(32, 64), attention_head_dim=[1, 1], cross_attention_dim=H_WIDTH,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), upcast_attention=True)
    added = dict(addition_embed_type="text_time", addition_time_embed_dim=256)
    if family == "SDXL":
        return dict(common, **added, block_out_channels=(32, 64), attention_head_dim=[1, 1],
                    cross_attention_dim=L_WIDTH + G_WIDTH, transformer_layers_per_block=[1, 2],
                    projection_class_embeddings_input_dim=G_PROJECTION + 6 * 256,
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    return dict(common, **added, block_out_channels=(32, 64, 64), attention_head_dim=[1, 1, 1],
                cross_attention_dim=G_WIDTH, transformer_layers_per_block=2,
                projection_class_embeddings_input_dim=G_PROJECTION + 5 * 256,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


def build(family, seed=0):
    """{"unet", "vae", text encoders by diffusers part name} for "SD2.x", "SDXL" or "SDXL refiner"."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    parts = {"unet": UNet2DConditionModel(**unet_config(family))}
    scale = 0.18215 if family == "SD2.x" else 0.13025
    parts["vae"] = AutoencoderKL(**dict(tiny_vae_config(), scaling_factor=scale))
    if family == "SD2.x":
        parts["text_encoder"] = CLIPTextModelWithProjection(CLIPTextConfig(**open_clip_text_config(H_WIDTH, H_WIDTH)))
    if family == "SDXL":
        parts["text_encoder"] = CLIPTextModel(CLIPTextConfig(**tiny_text_config()))
    if family in ("SDXL", "SDXL refiner"):
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**open_clip_text_config(G_WIDTH, G_PROJECTION)))
    for module in parts.values():  # random norms and biases, so a swapped or dropped one shows
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
    return {k: m.eval() for k, m in parts.items()}


def state_dicts(parts):
    return {k: m.state_dict() for k, m in parts.items()}
