"""Checkpoint loading: key maps, config inference, single files, diffusers folders, .ckpt, bad input.

The oracle is the diffusers/transformers modules a checkpoint was written from: what we load must
compute exactly what they compute.
"""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from comfyui_sld.sld_core.device import default_dtype, resolve_device
from comfyui_sld.sld_core.errors import CheckpointError, InvalidInputError
from comfyui_sld.sld_core.models.checkpoint import load_checkpoint
from comfyui_sld.sld_core.models.config_inference import (
    infer_text_config, infer_unet_config, infer_vae_config, sd15_config,
)
from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm, ldm_to_diffusers

PARTS = ("unet", "vae", "text_encoder")


def write_single_file(components, path):
    ldm = diffusers_to_ldm(*(components[p].state_dict() for p in PARTS))
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_file(tiny_components, tmp_path_factory):
    return write_single_file(tiny_components, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def assert_same_outputs(reference, model, clip, vae):
    """UNet, text encoder and VAE (encode + decode) of the loaded objects vs. the reference modules."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    t = torch.tensor([3, 700])
    ctx = torch.randn(2, 77, reference["unet"].config.cross_attention_dim, generator=gen)
    torch.testing.assert_close(
        model.unet(x, t, encoder_hidden_states=ctx).sample,
        reference["unet"](x, t, encoder_hidden_states=ctx).sample, atol=1e-6, rtol=0,
    )
    ids = torch.randint(0, 49406, (2, 77), generator=gen)
    ours, theirs = clip.text_encoder(ids), reference["text_encoder"](ids)
    torch.testing.assert_close(ours.last_hidden_state, theirs.last_hidden_state, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, atol=1e-6, rtol=0)
    image = torch.rand(2, 32, 32, 3, generator=gen)
    latent = vae.encode(image)
    ref_latent = reference["vae"].encode(image.movedim(-1, 1) * 2 - 1).latent_dist.mean
    torch.testing.assert_close(latent, ref_latent, atol=1e-6, rtol=0)
    ref_image = ((reference["vae"].decode(latent).sample + 1) / 2).clamp(0, 1).movedim(1, -1)
    torch.testing.assert_close(vae.decode(latent), ref_image, atol=1e-6, rtol=0)


# --- key maps and configs ---------------------------------------------------------------------------

def test_keymap_round_trip_is_identity(tiny_components):
    sds = [tiny_components[p].state_dict() for p in PARTS]
    ldm = diffusers_to_ldm(*sds)
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # 1x1 conv in LDM
    back = ldm_to_diffusers(ldm)
    for part, original in zip(PARTS, sds):
        original = {k: v for k, v in original.items() if not k.endswith("position_ids")}
        assert back[part].keys() == original.keys()
        for key, tensor in original.items():
            assert torch.equal(back[part][key], tensor), key


def sd15_meta_components():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        return dict(
            unet=UNet2DConditionModel.from_config(sd15_config("unet")),
            vae=AutoencoderKL.from_config(sd15_config("vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_dict(sd15_config("text_encoder"))),
        )


def test_sd15_shapes_infer_the_standard_configs():
    meta = sd15_meta_components()
    # The shipped configs are SD1.5's: the published parameter counts (UNet 859.52 M, VAE 83.65 M, CLIP-L 123.06 M).
    counts = {p: sum(t.numel() for t in meta[p].parameters()) for p in PARTS}
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    ldm = diffusers_to_ldm(*(meta[p].state_dict() for p in PARTS))
    # Names and counts of the original single-file layout (1130 tensors without position_ids).
    assert sum(k.startswith("model.diffusion_model.") for k in ldm) == 686
    assert sum(k.startswith("first_stage_model.") for k in ldm) == 248
    assert sum(k.startswith("cond_stage_model.transformer.text_model.") for k in ldm) == 196
    unet_keys = (
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "input_blocks.3.0.op.weight",
        "input_blocks.11.0.out_layers.3.weight", "middle_block.1.proj_out.weight", "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight", "output_blocks.3.0.skip_connection.weight", "time_embed.2.weight",
        "out.2.bias",
    )
    vae_keys = (
        "decoder.up.0.block.0.nin_shortcut.weight", "decoder.up.3.upsample.conv.weight", "encoder.norm_out.weight",
        "encoder.down.2.downsample.conv.weight", "decoder.mid.attn_1.proj_out.weight", "post_quant_conv.weight",
    )
    text_keys = ("encoder.layers.11.mlp.fc2.weight", "final_layer_norm.weight")
    for prefix, keys in (("model.diffusion_model.", unet_keys), ("first_stage_model.", vae_keys),
                         ("cond_stage_model.transformer.text_model.", text_keys)):
        for key in keys:
            assert prefix + key in ldm, key
    parts = ldm_to_diffusers(ldm)
    assert infer_unet_config(parts["unet"]) == sd15_config("unet")
    assert infer_vae_config(parts["vae"]) == sd15_config("vae")
    assert infer_text_config(parts["text_encoder"]) == sd15_config("text_encoder")


def test_tiny_configs_follow_the_inference_rules(tiny_components, tiny_configs):
    unet = infer_unet_config(tiny_components["unet"].state_dict())
    for key, value in tiny_configs["unet"].items():
        if key != "sample_size":
            assert unet[key] == (list(value) if isinstance(value, tuple) else value), key
    vae = infer_vae_config(tiny_components["vae"].state_dict())
    for key, value in tiny_configs["vae"].items():
        if key != "sample_size":
            assert vae[key] == (list(value) if isinstance(value, tuple) else value), key
    text = infer_text_config(tiny_components["text_encoder"].state_dict())
    for key, value in tiny_configs["text_encoder"].items():
        assert text[key] == value, key


# --- loading ----------------------------------------------------------------------------------------

def test_single_file_loads_the_same_model(tiny_components, tiny_file):
    model, clip, vae = load_checkpoint(tiny_file, device="cpu")
    assert model.dtype == torch.float32 and model.latent_scale == pytest.approx(0.18215)
    assert not any(t.is_meta for m in (model.unet, clip.text_encoder, vae.autoencoder) for t in m.state_dict().values())
    assert_same_outputs(tiny_components, model, clip, vae)


def test_diffusers_folder_loads_the_same_model(tiny_components, tmp_path):
    for part in PARTS:
        tiny_components[part].save_pretrained(tmp_path / part)
    model, clip, vae = load_checkpoint(tmp_path, device="cpu")
    assert_same_outputs(tiny_components, model, clip, vae)


def test_ckpt_with_state_dict_wrapper_loads(tiny_components, tmp_path):
    ldm = diffusers_to_ldm(*(tiny_components[p].state_dict() for p in PARTS))
    torch.save({"state_dict": ldm, "global_step": 1}, tmp_path / "tiny.ckpt")
    model, clip, vae = load_checkpoint(tmp_path / "tiny.ckpt", device="cpu")
    assert_same_outputs(tiny_components, model, clip, vae)


def test_reduced_layout_with_two_layers_per_block_round_trips(tmp_path, tiny_configs):
    """Another reduced SD1.x shape: three levels, two res-blocks each, attention on the two outer levels."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(3)
    components = dict(
        unet=UNet2DConditionModel(**{
            **tiny_configs["unet"], "layers_per_block": 2, "block_out_channels": (32, 32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), "cross_attention_dim": 64,
        }),
        vae=AutoencoderKL(**{
            **tiny_configs["vae"], "layers_per_block": 2, "block_out_channels": (32, 32, 64),
            "down_block_types": ("DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3,
        }),
        text_encoder=CLIPTextModel(CLIPTextConfig(**{**tiny_configs["text_encoder"], "hidden_size": 64, "num_attention_heads": 1,
                                                     "num_hidden_layers": 3, "projection_dim": 64})),
    )
    components = {k: m.eval() for k, m in components.items()}
    model, clip, vae = load_checkpoint(write_single_file(components, tmp_path / "r.safetensors"), device="cpu")
    assert model.unet.config.layers_per_block == 2 and clip.text_encoder.config.num_hidden_layers == 3
    assert_same_outputs(components, model, clip, vae)


def test_fp16_file_loads_in_requested_dtype(tiny_components, tmp_path):
    ldm = diffusers_to_ldm(*(tiny_components[p].state_dict() for p in PARTS))
    save_file({k: v.half().contiguous() for k, v in ldm.items()}, str(tmp_path / "half.safetensors"))
    model, clip, vae = load_checkpoint(tmp_path / "half.safetensors", device="cpu")
    assert model.dtype == clip.text_encoder.dtype == vae.dtype == torch.float32  # CPU default
    model, clip, _ = load_checkpoint(tmp_path / "half.safetensors", device="cpu", dtype=torch.float16)
    assert model.dtype == clip.text_encoder.dtype == torch.float16
    expected = tiny_components["unet"].state_dict()["conv_in.weight"].half()
    assert torch.equal(model.unet.conv_in.weight, expected)


# --- bad input --------------------------------------------------------------------------------------

def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match="nope.safetensors") as err:
        load_checkpoint(path, device="cpu")
    assert err.value.path == str(path)


def test_truncated_safetensors_is_refused(tiny_file, tmp_path):
    data = tiny_file.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path, device="cpu")


@pytest.mark.parametrize("name", ["junk.safetensors", "junk.ckpt"])
def test_garbage_bytes_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        load_checkpoint(path, device="cpu")
    assert name in str(err.value)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Payload:
    pass


@pytest.mark.parametrize("obj", ["exploit", "instance"])
def test_ckpt_with_python_objects_is_refused_without_running_them(tmp_path, obj):
    marker = tmp_path / "pwned"
    value = Exploit(marker) if obj == "exploit" else Payload()
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "extra": value}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path, device="cpu")
    assert not marker.exists()
    with open(path, "rb") as f:  # the file really would have run code when unpickled unsafely
        assert b"system" in f.read() or obj == "instance"


def synthetic_file(tmp_path, keys):
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(tmp_path / "x.safetensors"))
    return tmp_path / "x.safetensors"


@pytest.mark.parametrize("family, keys", [
    ("SD2.x", {"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3, 2),
               "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 1024)}),
    ("SD2.x", {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 1024)}),
    ("SDXL", {"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": (4,),
              "model.diffusion_model.label_emb.0.0.weight": (4, 4)}),
])
def test_incomplete_sd2_and_sdxl_files_are_named_and_refused(tmp_path, family, keys):
    """SD2.x/SDXL load (tests/test_model_families.py); a file with only a few of their weights is
    refused naming the family and the first part it lacks."""
    with pytest.raises(CheckpointError, match=f"not an {family} checkpoint: it has no VAE weights"):
        load_checkpoint(synthetic_file(tmp_path, keys), device="cpu")


def test_sd2_diffusers_folder_without_weights_is_refused(tmp_path):
    for part, config in (("unet", {"cross_attention_dim": 1024}), ("vae", {}), ("text_encoder", {})):
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no weights found in"):
        load_checkpoint(tmp_path, device="cpu")


def test_unrelated_and_incomplete_files_are_refused(tmp_path, tiny_file):
    with pytest.raises(CheckpointError, match="no UNet weights"):
        load_checkpoint(synthetic_file(tmp_path, {"foo.weight": (2, 2)}), device="cpu")
    (tmp_path / "model.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_checkpoint(tmp_path / "model.txt", device="cpu")
    from safetensors.torch import load_file

    state = load_file(str(tiny_file))
    del state["model.diffusion_model.out.2.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match="out.2.weight|conv_out"):
        load_checkpoint(tmp_path / "partial.safetensors", device="cpu")
    with pytest.raises(CheckpointError, match="not a diffusers SD1.x/SD2.x/SDXL folder"):
        load_checkpoint(tmp_path, device="cpu")


def test_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert default_dtype("cpu") == torch.float32 and default_dtype("cuda") == torch.float16
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(InvalidInputError, match="unknown device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(InvalidInputError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(InvalidInputError):
            load_checkpoint("whatever.safetensors", device="cuda")

