"""SD2.x / SDXL / SDXL refiner: key maps, shape inference of the official configs, family detection,
refusals, and how the prediction type of a single file is decided (as ComfyUI decides it).

Oracles: the diffusers/transformers modules a file was written from (what we map back must compute
what they compute), the published parameter counts and original key names, and for OpenCLIP's fused
attention layout PyTorch's own ``nn.MultiheadAttention``, the module OpenCLIP's text tower is made of.
"""

import pytest

import tiny_families  # tests/tiny_families.py (pytest's pythonpath in pyproject.toml)
import torch

from comfyui_sld.sld_core.errors import UnsupportedModelError
from comfyui_sld.sld_core.models.config_inference import (
    SD2_BASE, detect_family, detect_family_from_unet_config, infer_configs, shipped_config,
)
from comfyui_sld.sld_core.models.families import (
    FAMILIES, diffusers_sampling, identify_diffusers_folder, identify_single_file, refuse_unsupported,
    single_file_sampling,
)
from comfyui_sld.sld_core.models.keymaps import (
    diffusers_to_ldm, ldm_to_diffusers, open_clip_to_transformers, transformers_to_open_clip,
)

tiny = tiny_families
build, state_dicts = tiny.build, tiny.state_dicts

FAMILY_NAMES = ("SD2.x", "SDXL", "SDXL refiner")


def to_ldm(family, sds):
    return diffusers_to_ldm(sds["unet"], sds["vae"], sds.get("text_encoder"), family, sds.get("text_encoder_2"))


def meta_components(family):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    spec = FAMILIES[family]
    with torch.device("meta"):
        parts = dict(unet=UNet2DConditionModel.from_config(shipped_config(spec.unet)),
                     vae=AutoencoderKL.from_config(shipped_config(spec.vae)))
        for text in spec.text_encoders:
            cls = CLIPTextModelWithProjection if text.projected_pooled else CLIPTextModel
            parts[text.part] = cls(CLIPTextConfig.from_dict(shipped_config(text.config)))
    return parts


def count(module):
    return sum(p.numel() for p in module.parameters())


# Published sizes: SD2 UNet 865.9 M, SDXL base UNet 2.567 B, refiner UNet 2.26 B, the KL VAE 83.65 M,
# CLIP-L 123.06 M, OpenCLIP ViT-H text tower 354.0 M (24 layers + projection; diffusers keeps 23 layers,
# 340.4 M), OpenCLIP bigG text tower with projection 694.66 M.
FULL_SIZE = {
    "SD2.x": ({"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 354_032_640}, 1227),
    "SDXL": ({"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
              "text_encoder_2": 694_659_840}, 2513),
    "SDXL refiner": ({"unet": 2_259_526_660, "vae": 83_653_863, "text_encoder_2": 694_659_840}, 1857),
}
ORIGINAL_KEYS = {  # names (and shapes) as the published single files hold them
    "SD2.x": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),  # linear projection
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias": (320,),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 1024),
        "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.text_projection": (1024, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.ln_final.weight": (1024,),
        "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    },
    "SDXL": {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.label_emb.0.2.weight": (1280, 1280),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.norm3.weight": (1280,),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.8.0.out_layers.3.weight": (320, 320, 3, 3),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight": (5120, 1280),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
    },
    "SDXL refiner": {
        "model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.3.attn2.to_k.weight": (768, 1280),
        "model.diffusion_model.middle_block.1.transformer_blocks.3.attn1.to_q.weight": (1536, 1536),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1536, 1536, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1536, 1536, 3, 3),
        "conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_bias": (3840,),
    },
}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_full_size_shapes_infer_the_official_configs(family):
    meta = meta_components(family)
    counts, n_keys = FULL_SIZE[family]
    assert {part: count(m) for part, m in meta.items()} == counts
    ldm = to_ldm(family, state_dicts(meta))
    assert len(ldm) == n_keys  # without position_ids and OpenCLIP's logit_scale
    for key, shape in ORIGINAL_KEYS[family].items():
        assert tuple(ldm[key].shape) == shape, key
    assert identify_single_file(ldm, lambda k: ldm[k].shape) == family
    prediction = "v_prediction" if family == "SD2.x" else "epsilon"
    configs = infer_configs(ldm_to_diffusers(ldm, family), family, prediction)
    spec = FAMILIES[family]
    assert configs["unet"] == shipped_config(spec.unet)
    assert configs["vae"] == shipped_config(spec.vae)
    for text in spec.text_encoders:
        assert configs[text.part] == shipped_config(text.config)


def test_sd2_512_base_and_768_v_differ_only_where_the_prediction_type_says():
    ldm = to_ldm("SD2.x", state_dicts(meta_components("SD2.x")))
    base = infer_configs(ldm_to_diffusers(ldm, "SD2.x"), "SD2.x", "epsilon")["unet"]
    assert base == {**shipped_config("sd2_unet"), **SD2_BASE}
    assert (base["sample_size"], base["upcast_attention"]) == (64, False)  # stable-diffusion-2-1-base


# --- reduced-width models of each family: file → our modules compute what the originals compute ----

def rebuild(family, parts, configs):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    out = {"unet": UNet2DConditionModel.from_config(configs["unet"]),
           "vae": AutoencoderKL.from_config(configs["vae"])}
    for text in FAMILIES[family].text_encoders:
        config = CLIPTextConfig.from_dict(configs[text.part])
        out[text.part] = (CLIPTextModelWithProjection if text.projected_pooled else CLIPTextModel)(config)
    for part, module in out.items():
        # every weight is mapped (position_ids is a buffer transformers fills itself)
        assert set(parts[part]) == {k for k in module.state_dict() if not k.endswith("position_ids")}, part
        module.load_state_dict(parts[part], strict=False)
    return {k: m.eval() for k, m in out.items()}


def assert_same(family, reference, ours):
    gen = torch.Generator().manual_seed(1)
    unet = reference["unet"].config
    x = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([5, 900])
    ctx = torch.randn(2, 77, unet.cross_attention_dim, generator=gen)
    kwargs = {}
    if unet.addition_embed_type == "text_time":
        pooled = reference["text_encoder_2"].config.projection_dim
        n_ids = (unet.projection_class_embeddings_input_dim - pooled) // 256
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled, generator=gen),
                                       "time_ids": torch.rand(2, n_ids, generator=gen) * 1024}
    with torch.no_grad():
        torch.testing.assert_close(ours["unet"](x, t, ctx, **kwargs).sample,
                                   reference["unet"](x, t, ctx, **kwargs).sample, atol=1e-6, rtol=0)
        ids = torch.randint(0, 49406, (2, 77), generator=gen)
        ids[:, 10] = 49407
        for text in FAMILIES[family].text_encoders:
            a = ours[text.part](ids, output_hidden_states=True)
            b = reference[text.part](ids, output_hidden_states=True)
            torch.testing.assert_close(a.hidden_states[-2], b.hidden_states[-2], atol=1e-6, rtol=0)
            torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=1e-6, rtol=0)
            pooled = "text_embeds" if text.projected_pooled else "pooler_output"
            torch.testing.assert_close(a[pooled], b[pooled], atol=1e-6, rtol=0)
        latent = torch.randn(1, 4, 4, 4, generator=gen)
        torch.testing.assert_close(ours["vae"].decode(latent).sample, reference["vae"].decode(latent).sample,
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_reduced_single_file_round_trips_and_infers_its_config(family, tmp_path):
    from safetensors.torch import load_file, save_file

    reference = build(family)
    sds = state_dicts(reference)
    save_file({k: v.contiguous() for k, v in to_ldm(family, sds).items()}, str(tmp_path / "m.safetensors"))
    ldm = load_file(str(tmp_path / "m.safetensors"))
    assert identify_single_file(ldm, lambda k: ldm[k].shape) == family
    prediction, _ = single_file_sampling(family, ldm, ldm.__getitem__)
    parts = ldm_to_diffusers(ldm, family)
    configs = infer_configs(parts, family, prediction)
    for key in ("block_out_channels", "down_block_types", "up_block_types", "cross_attention_dim",
                "attention_head_dim", "projection_class_embeddings_input_dim", "addition_time_embed_dim"):
        assert configs["unet"].get(key) == _plain(reference["unet"].config.get(key)), key
    depth = reference["unet"].config.transformer_layers_per_block
    assert configs["unet"].get("transformer_layers_per_block", 1) == _plain(depth)
    for text in FAMILIES[family].text_encoders:
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "projection_dim", "hidden_act"):
            assert configs[text.part][key] == reference[text.part].config.to_dict()[key], (text.part, key)
    assert_same(family, reference, rebuild(family, parts, configs))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_sd2_in_the_sgm_layout_is_sd2():
    """SD2 saved by sgm puts ViT-H at conditioner.embedders.0.model. with no label_emb (ComfyUI's SD20)."""
    ldm = to_ldm("SD2.x", state_dicts(build("SD2.x")))
    sgm = {k.replace("cond_stage_model.model.", "conditioner.embedders.0.model."): v for k, v in ldm.items()}
    assert identify_single_file(sgm, lambda k: sgm[k].shape) == "SD2.x"


# --- OpenCLIP's text tower, independently -----------------------------------------------------------

class OpenClipTextTower(torch.nn.Module):
    """OpenCLIP's text transformer as its layout defines it: pre-norm residual blocks of PyTorch's
    fused-projection ``nn.MultiheadAttention`` and a c_fc/GELU/c_proj MLP; ``ln_final``; the pooled
    output is the end token's feature times ``text_projection``."""

    def __init__(self, width, layers, heads, projection, vocab=49408, positions=77):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(vocab, width)
        self.positional_embedding = torch.nn.Parameter(torch.randn(positions, width) * 0.1)
        self.blocks = torch.nn.ModuleList()
        for _ in range(layers):
            block = torch.nn.Module()
            block.ln_1, block.ln_2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
            block.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
            block.c_fc, block.c_proj = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)
            self.blocks.append(block)
        self.ln_final = torch.nn.LayerNorm(width)
        self.text_projection = torch.nn.Parameter(torch.randn(width, projection) * width**-0.5)
        with torch.no_grad():
            for p in self.parameters():
                if p.ndim == 1:  # random biases and norms, so a swapped or dropped one shows
                    p.add_(torch.randn_like(p) * 0.1)

    def state_dict_in_open_clip_names(self):
        out = {"token_embedding.weight": self.token_embedding.weight, "positional_embedding": self.positional_embedding,
               "ln_final.weight": self.ln_final.weight, "ln_final.bias": self.ln_final.bias,
               "text_projection": self.text_projection, "logit_scale": torch.tensor(4.6)}
        for i, b in enumerate(self.blocks):
            p = f"transformer.resblocks.{i}."
            out.update({p + "ln_1.weight": b.ln_1.weight, p + "ln_1.bias": b.ln_1.bias,
                        p + "ln_2.weight": b.ln_2.weight, p + "ln_2.bias": b.ln_2.bias,
                        p + "attn.in_proj_weight": b.attn.in_proj_weight, p + "attn.in_proj_bias": b.attn.in_proj_bias,
                        p + "attn.out_proj.weight": b.attn.out_proj.weight, p + "attn.out_proj.bias": b.attn.out_proj.bias,
                        p + "mlp.c_fc.weight": b.c_fc.weight, p + "mlp.c_fc.bias": b.c_fc.bias,
                        p + "mlp.c_proj.weight": b.c_proj.weight, p + "mlp.c_proj.bias": b.c_proj.bias})
        return {k: v.detach() for k, v in out.items()}

    def forward(self, ids):
        n = ids.shape[1]
        mask = torch.full((n, n), float("-inf")).triu(1)
        x = self.token_embedding(ids) + self.positional_embedding
        hidden = []
        for b in self.blocks:
            h = b.ln_1(x)
            x = x + b.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            x = x + b.c_proj(torch.nn.functional.gelu(b.c_fc(b.ln_2(x))))
            hidden.append(x)
        x = self.ln_final(x)
        pooled = x[torch.arange(len(ids)), (ids == 49407).int().argmax(-1)] @ self.text_projection
        return hidden, x, pooled


def test_open_clip_tower_maps_onto_clip_text_model_with_projection():
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(4)
    tower = OpenClipTextTower(width=128, layers=3, heads=2, projection=96).eval()
    open_clip_sd = tower.state_dict_in_open_clip_names()
    mapped = open_clip_to_transformers(open_clip_sd)
    config = CLIPTextConfig(**dict(tiny.open_clip_text_config(128, 96), intermediate_size=512, num_attention_heads=2))
    model = CLIPTextModelWithProjection(config).eval()
    model.load_state_dict(mapped, strict=False)
    assert set(mapped) == {k for k in model.state_dict() if not k.endswith("position_ids")}
    ids = torch.randint(0, 49406, (2, 77))
    ids[0, 5:] = 0
    ids[0, 4] = ids[1, 76] = 49407  # OpenCLIP pads with 0 after the end token
    with torch.no_grad():
        hidden, last, pooled = tower(ids)
        out = model(ids, output_hidden_states=True)
    torch.testing.assert_close(out.hidden_states[-2], hidden[-2], atol=2e-5, rtol=0)
    torch.testing.assert_close(out.last_hidden_state, last, atol=2e-5, rtol=0)
    torch.testing.assert_close(out.text_embeds, pooled, atol=2e-5, rtol=0)
    # the split is views of the file's tensors (no copy), and the inverse restores the fused layout
    q = mapped["text_model.encoder.layers.0.self_attn.q_proj.weight"]
    assert q.untyped_storage().data_ptr() == open_clip_sd["transformer.resblocks.0.attn.in_proj_weight"].untyped_storage().data_ptr()
    back = transformers_to_open_clip(mapped)
    assert back.keys() == open_clip_sd.keys() - {"logit_scale"}
    assert all(torch.equal(back[k], open_clip_sd[k]) for k in back)


# --- recognising and refusing -----------------------------------------------------------------------

def shapes(keys):
    return keys, lambda k: keys[k]


@pytest.mark.parametrize("name, keys", [
    ("Flux", {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (9, 3), "model.diffusion_model.img_in.weight": (3, 64)}),
    ("Flux", {"double_blocks.0.img_attn.norm.key_norm.scale": (8,), "img_in.weight": (3, 64)}),  # bare transformer file
    ("SD3", {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": (9, 3), "model.diffusion_model.x_embedder.proj.weight": (3, 16, 2, 2)}),
    ("SD3.5", {"model.diffusion_model.joint_blocks.0.x_block.attn2.qkv.weight": (9, 3), "model.diffusion_model.joint_blocks.0.x_block_self_attn": (1,),
               "model.diffusion_model.x_embedder.proj.weight": (3, 16, 2, 2)}),
    ("SD3.5", {**{f"model.diffusion_model.joint_blocks.{i}.x_block.attn.qkv.weight": (9, 3) for i in range(38)},
               "model.diffusion_model.x_embedder.proj.weight": (3, 16, 2, 2)}),  # SD3.5 Large: 38 joint blocks
    ("Stable Cascade", {"clip_txt_mapper.weight": (4, 4), "down_blocks.0.0.channelwise.0.weight": (4,)}),
    ("AuraFlow", {"model.cond_seq_linear.weight": (4, 4)}),
    ("Playground v2.5 (EDM)", {"edm_mean": (1, 4, 1, 1), "edm_std": (1, 4, 1, 1), "conditioner.embedders.1.model.ln_final.weight": (4,)}),
    ("SD2.1 unCLIP", {"cond_stage_model.model.ln_final.weight": (4,), "model.diffusion_model.label_emb.0.0.weight": (4, 1536)}),
    ("SDXL", {"model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
              "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048)}),  # UNet only
    ("SDXL refiner", {"model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
                      "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (768, 1280)}),
    ("SD1.x", {"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)}),
])
def test_families_are_recognised_by_name(name, keys):
    assert identify_single_file(*shapes(keys)) == name
    assert detect_family(*shapes(keys)) == (None if name == "SD1.x" else name)


@pytest.mark.parametrize("name", ["Flux", "SD3", "SD3.5", "Stable Cascade", "Playground v2.5 (EDM)", "SD2.1 unCLIP"])
def test_unsupported_families_are_refused_by_name(name, tmp_path):
    with pytest.raises(UnsupportedModelError) as err:
        refuse_unsupported(tmp_path / "m.safetensors", name)
    assert err.value.family == name
    assert f"{name} checkpoints are not supported" in str(err.value) and "m.safetensors" in str(err.value)
    for supported in FAMILIES:
        refuse_unsupported(tmp_path / "m.safetensors", supported)  # no error


@pytest.mark.parametrize("unet, index, parts, name", [
    ({"cross_attention_dim": 768}, {"_class_name": "StableDiffusionPipeline"}, ("unet", "text_encoder"), "SD1.x"),
    ({"cross_attention_dim": 1024}, None, ("unet", "text_encoder"), "SD2.x"),
    ({"addition_embed_type": "text_time", "cross_attention_dim": 2048}, {"_class_name": "StableDiffusionXLPipeline"},
     ("unet", "text_encoder", "text_encoder_2"), "SDXL"),
    ({"addition_embed_type": "text_time", "cross_attention_dim": 1280},
     {"_class_name": "StableDiffusionXLImg2ImgPipeline", "requires_aesthetics_score": True}, ("unet", "text_encoder_2"),
     "SDXL refiner"),
    ({"addition_embed_type": "text_time"}, None, ("unet", "text_encoder_2"), "SDXL refiner"),
    (None, {"_class_name": "FluxPipeline"}, ("transformer",), "Flux"),
    (None, {"_class_name": "StableDiffusion3Pipeline"}, ("transformer",), "SD3/SD3.5"),
])
def test_diffusers_folders_are_recognised(unet, index, parts, name):
    assert identify_diffusers_folder(unet, index, parts) == name


def test_unet_config_alone_tells_sd2_and_sdxl_from_sd1():
    assert detect_family_from_unet_config({"cross_attention_dim": 768}) is None
    assert detect_family_from_unet_config({"cross_attention_dim": 1024}) == "SD2.x"
    assert detect_family_from_unet_config({"addition_embed_type": "text_time"}) == "SDXL"


# --- the prediction type of a single file (ComfyUI's rules) -----------------------------------------

def sd2_file(norm1_std, in_channels=4):
    gen = torch.Generator().manual_seed(0)
    bias = torch.randn(320, generator=gen)
    bias = (bias - bias.mean()) / bias.std(unbiased=False) * norm1_std
    return {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, in_channels, 3, 3),
            "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias": bias,
            "model.diffusion_model.output_blocks.4.1.transformer_blocks.0.norm1.bias": torch.zeros(320),
            "cond_stage_model.model.ln_final.weight": torch.ones(4)}


@pytest.mark.parametrize("std, in_channels, expected", [
    (0.12, 4, "v_prediction"), (0.0905, 4, "v_prediction"), (0.0895, 4, "epsilon"), (0.03, 4, "epsilon"),
    (0.12, 9, "epsilon"),  # SD2 inpainting models are ε whatever the statistic says
])
def test_sd2_prediction_follows_comfyuis_norm_statistic(std, in_channels, expected):
    state = sd2_file(std, in_channels)
    assert single_file_sampling("SD2.x", state, state.__getitem__) == (expected, False)


def test_sd2_rule_reads_only_that_one_tensor():
    state = sd2_file(0.12)
    read = []
    single_file_sampling("SD2.x", state, lambda k: read.append(k) or state[k])
    assert sorted(read) == ["model.diffusion_model.input_blocks.0.0.weight",
                            "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"]


@pytest.mark.parametrize("family", ["SDXL", "SDXL refiner"])
def test_sdxl_prediction_follows_the_v_pred_and_ztsnr_keys(family):
    def never(key):
        raise AssertionError("no tensor needs reading")

    assert single_file_sampling(family, ["model.diffusion_model.out.2.weight"], never) == ("epsilon", False)
    assert single_file_sampling(family, ["v_pred"], never) == ("v_prediction", False)
    assert single_file_sampling(family, ["v_pred", "ztsnr"], never) == ("v_prediction", True)
    assert single_file_sampling(family, ["ztsnr"], never) == ("epsilon", False)


def test_sd1_is_always_epsilon_and_diffusers_reads_the_scheduler():
    assert single_file_sampling("SD1.x", ["v_pred", "ztsnr"], None) == ("epsilon", False)
    assert diffusers_sampling(None) == ("epsilon", False)
    assert diffusers_sampling({"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}) == ("v_prediction", True)


# --- through the loader -----------------------------------------------------------------------------

def loaded_modules(family, model, clip, vae):
    modules = {"unet": model.unet, "vae": vae.autoencoder}
    if family == "SDXL":
        modules.update(text_encoder=clip.clip_l.text_encoder, text_encoder_2=clip.clip_g.text_encoder)
    else:
        modules[FAMILIES[family].text_encoders[0].part] = clip.text_encoder
    return modules


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_load_checkpoint_single_file(family, tmp_path):
    from safetensors.torch import save_file

    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint
    from comfyui_sld.sld_core.models.sdxl_clip import RefinerClip, SDXLClip
    from comfyui_sld.sld_core.models.tensor_files import is_mapped

    reference = build(family)
    if family == "SD2.x":  # a 768-v-like statistic in the block ComfyUI looks at (std 0.12 > 0.09)
        with torch.no_grad():
            bias = reference["unet"].up_blocks[-1].attentions[-1].transformer_blocks[0].norm1.bias
            bias.copy_(torch.linspace(-0.2, 0.2, len(bias)))
    ldm = to_ldm(family, state_dicts(reference))
    if family == "SDXL":
        ldm.update(v_pred=torch.tensor([]), ztsnr=torch.tensor([]))  # what ComfyUI saves with a zsnr v model
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(tmp_path / "m.safetensors"))
    model, clip, vae = load_checkpoint(tmp_path / "m.safetensors", device="cpu")
    assert_same(family, reference, loaded_modules(family, model, clip, vae))
    assert model.latent_scale == FAMILIES[family].latent_scale
    expected = {"SD2.x": ("v_prediction", False), "SDXL": ("v_prediction", True), "SDXL refiner": ("epsilon", False)}
    assert (model.prediction_type, model.schedule.zsnr) == expected[family]
    assert type(clip) is {"SDXL": SDXLClip, "SDXL refiner": RefinerClip}.get(family, type(clip))
    # the same zero-copy path as SD1: OpenCLIP's split q/k/v rows are views of the mapped file
    encoder = loaded_modules(family, model, clip, vae)[FAMILIES[family].text_encoders[-1].part]
    assert is_mapped(encoder.text_model.encoder.layers[0].self_attn.k_proj.weight)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_load_checkpoint_diffusers_folder(family, tmp_path):
    import json

    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    reference = build(family)
    for part, module in reference.items():
        module.save_pretrained(tmp_path / part)
    pipeline = {"SD2.x": "StableDiffusionPipeline", "SDXL": "StableDiffusionXLPipeline",
                "SDXL refiner": "StableDiffusionXLImg2ImgPipeline"}[family]
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": pipeline, **({"requires_aesthetics_score": True} if family == "SDXL refiner" else {})}))
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"beta_schedule": "scaled_linear", "prediction_type": "v_prediction" if family == "SD2.x" else "epsilon"}))
    model, clip, vae = load_checkpoint(tmp_path, device="cpu")
    assert_same(family, reference, loaded_modules(family, model, clip, vae))
    assert model.prediction_type == ("v_prediction" if family == "SD2.x" else "epsilon")
    if family == "SD2.x":
        # diffusers' SD2 text encoder ends at ComfyUI's penultimate layer: its last layer is missing
        assert (clip.layer, clip.dropped_layers) == (-2, 1)


def test_load_checkpoint_refuses_flux_by_name_before_building(tmp_path):
    from safetensors.torch import save_file

    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    keys = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (9, 3), "model.diffusion_model.img_in.weight": (3, 64),
            "vae.decoder.conv_in.weight": (4, 4, 3, 3)}
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(tmp_path / "flux1-dev.safetensors"))
    with pytest.raises(UnsupportedModelError, match="Flux checkpoints are not supported") as err:
        load_checkpoint(tmp_path / "flux1-dev.safetensors", device="cpu")
    assert "flux1-dev.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_an_unrecognised_diffusion_model_is_refused_as_such(tmp_path):
    keys = {"model.diffusion_model.layers.0.attention.qkv.weight": (9, 3), "model.diffusion_model.x_embedder.weight": (3, 4)}
    name = identify_single_file(*shapes(keys))
    with pytest.raises(UnsupportedModelError, match="not a Stable Diffusion UNet") as err:
        refuse_unsupported(tmp_path / "lumina.safetensors", name)
    assert "lumina.safetensors" in str(err.value)
