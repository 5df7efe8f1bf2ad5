"""SD2.x and SDXL text encoding with ComfyUI's semantics, and SDXL's size conditioning.

Oracles: transformers' CLIPTextModel / CLIPTextModelWithProjection run the way ComfyUI runs them
(layer, final norm, padding token, projection), diffusers' StableDiffusionXLPipeline (``encode_prompt``,
``_get_add_time_ids``) and its UNet's own size embedding, and the sinusoid ComfyUI embeds sizes with.
"""
import math

import pytest

import tiny_families  # tests/tiny_families.py (pytest's pythonpath in pyproject.toml)
import torch

from comfyui_sld.sld_core.models.clip import TOKENIZER_DIR, Clip, load_clip_tokenizer
from comfyui_sld.sld_core.models.families import CLIP_H_SD2
from comfyui_sld.sld_core.models.sdxl_clip import RefinerClip, SDXLClip
from comfyui_sld.sld_core.models.sdxl_conditioning import added_cond_kwargs, time_ids

BOS, EOS = 49406, 49407


tiny = tiny_families


@pytest.fixture(scope="module")
def sdxl():
    return tiny.build("SDXL")


@pytest.fixture(scope="module")
def sd2():
    return tiny.build("SD2.x")


def ids_for(prompt, pad):
    """One chunk as ComfyUI builds it: start, the prompt's tokens, end, then the encoder's pad token."""
    body = load_clip_tokenizer()(prompt, add_special_tokens=False)["input_ids"]
    return [BOS] + body + [EOS] + [pad] * (75 - len(body))


def run(encoder, ids, layer, final_norm):
    with torch.no_grad():
        out = encoder(torch.tensor(ids), output_hidden_states=True)
        z = out.hidden_states[layer]
        if final_norm:
            z = getattr(encoder, "text_model", encoder).final_layer_norm(z)
    return z, out


# --- SD2.x: OpenCLIP ViT-H, penultimate layer with the final norm, projected pooled, pad 0 -----------

def test_sd2_prompt_is_the_normed_penultimate_layer_padded_with_zero(sd2):
    clip = Clip.for_spec(load_clip_tokenizer(), sd2["text_encoder"], CLIP_H_SD2)
    prompt = "a photo of an astronaut riding a horse"
    chunks = clip.tokenize(prompt)
    assert [t for t, _ in chunks[0]] == ids_for(prompt, 0)
    [[cond, extra]] = clip.encode(prompt)
    z, out = run(sd2["text_encoder"], [ids_for(prompt, 0)], -2, True)
    torch.testing.assert_close(cond, z, atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], out.text_embeds, atol=1e-6, rtol=0)
    assert cond.shape == (1, 77, tiny.H_WIDTH)
    assert not torch.allclose(cond, out.last_hidden_state, atol=1e-3)  # the layer choice matters


def test_sd2_diffusers_layout_uses_its_stored_last_layer(sd2):
    """A diffusers SD2 text encoder is ViT-H without its last layer: its last layer is ComfyUI's penultimate."""
    from transformers import CLIPTextConfig, CLIPTextModel

    full = sd2["text_encoder"]
    config = CLIPTextConfig(**{**full.config.to_dict(), "num_hidden_layers": full.config.num_hidden_layers - 1})
    truncated = CLIPTextModel(config).eval()
    state = {k.removeprefix("text_model."): v for k, v in full.state_dict().items() if k != "text_projection.weight"}
    truncated.load_state_dict({k: v for k, v in state.items() if k in truncated.state_dict()})
    prompt = "a red cube on a table"
    ours = Clip.for_spec(load_clip_tokenizer(), truncated, CLIP_H_SD2, last_layer_dropped=True).encode(prompt)[0][0]
    comfy = Clip.for_spec(load_clip_tokenizer(), full, CLIP_H_SD2).encode(prompt)[0][0]
    torch.testing.assert_close(ours, comfy, atol=1e-6, rtol=0)


def test_sd2_weighted_and_long_prompts(sd2):
    clip = Clip.for_spec(load_clip_tokenizer(), sd2["text_encoder"], CLIP_H_SD2)
    prompt = "word " * 80 + "(red:1.4) cat"
    chunks = clip.tokenize(prompt)
    assert len(chunks) == 2 and chunks[1][-1] == (0, 1.0)  # OpenCLIP pads with 0
    [[cond, extra]] = clip.encode(prompt)
    ids = [[t for t, _ in c] for c in chunks]
    empty = [BOS, EOS] + [0] * 75
    z, out = run(sd2["text_encoder"], ids + [empty], -2, True)
    weights = torch.tensor([[w for _, w in c] for c in chunks]).unsqueeze(-1)
    expected = torch.where(weights != 1, (z[:2] - z[2:]) * weights + z[2:], z[:2]).reshape(1, 154, -1)
    torch.testing.assert_close(cond, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], out.text_embeds[:1], atol=1e-6, rtol=0)  # first chunk's


# --- SDXL: CLIP-L ⧺ bigG, penultimate layers without the final norm, bigG's projected pooled ---------

@pytest.fixture(scope="module")
def pipeline(sdxl):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    # bigG's tokenizer pads with "!" (token 0) in the published SDXL repository; CLIP-L's with the end token.
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token="!")
    assert tokenizer_2.pad_token_id == 0
    return StableDiffusionXLPipeline(
        vae=sdxl["vae"], text_encoder=sdxl["text_encoder"], text_encoder_2=sdxl["text_encoder_2"],
        tokenizer=load_clip_tokenizer(), tokenizer_2=tokenizer_2, unet=sdxl["unet"],
        scheduler=EulerDiscreteScheduler(), force_zeros_for_empty_prompt=False)


@pytest.fixture(scope="module")
def sdxl_clip(sdxl):
    return SDXLClip(load_clip_tokenizer(), sdxl["text_encoder"], sdxl["text_encoder_2"])


def test_sdxl_prompt_equals_diffusers_encode_prompt(sdxl_clip, pipeline):
    prompt = "a photo of an astronaut riding a horse on mars, 4k"
    [[cond, extra]] = sdxl_clip.encode(prompt)
    with torch.no_grad():
        embeds, _, pooled, _ = pipeline.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    assert cond.shape == (1, 77, tiny.L_WIDTH + tiny.G_WIDTH) and extra.keys() == {"pooled_output"}
    torch.testing.assert_close(cond, embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], pooled, atol=1e-6, rtol=0)


def test_sdxl_weighted_long_prompt(sdxl_clip, sdxl):
    prompt = "a (castle:1.3) on a hill, " + "detailed " * 90
    tokens = sdxl_clip.tokenize(prompt)
    assert len(tokens["l"]) == len(tokens["g"]) == 2
    assert tokens["l"][1][-1] == (EOS, 1.0) and tokens["g"][1][-1] == (0, 1.0)
    [[cond, extra]] = sdxl_clip.encode(prompt)
    parts = []
    for name, encoder, pad in (("l", sdxl["text_encoder"], EOS), ("g", sdxl["text_encoder_2"], 0)):
        ids = [[t for t, _ in c] for c in tokens[name]] + [[BOS, EOS] + [pad] * 75]
        z, out = run(encoder, ids, -2, False)
        w = torch.tensor([[w for _, w in c] for c in tokens[name]]).unsqueeze(-1)
        parts.append(torch.where(w != 1, (z[:2] - z[2:]) * w + z[2:], z[:2]).reshape(1, 154, -1))
        if name == "g":
            pooled = out.text_embeds[:1]
    torch.testing.assert_close(cond, torch.cat(parts, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], pooled, atol=1e-6, rtol=0)
    assert (torch.tensor([[w for _, w in c] for c in tokens["g"]]) == 1.3).sum() > 0


def test_clip_text_encode_sdxl_pads_the_shorter_prompt_and_carries_sizes(sdxl_clip):
    [[cond, extra]] = sdxl_clip.encode_sdxl(896, 1152, 32, 64, 1024, 768, "a cat " * 50, "a dog")
    assert cond.shape == (1, 154, tiny.L_WIDTH + tiny.G_WIDTH)
    assert {k: extra[k] for k in extra if k != "pooled_output"} == dict(
        width=896, height=1152, crop_w=32, crop_h=64, target_width=1024, target_height=768)
    l_chunks = sdxl_clip.clip_l.tokenize("a dog") + sdxl_clip.clip_l.tokenize("")
    expected_l, _ = sdxl_clip.clip_l.encode_tokens(l_chunks)
    torch.testing.assert_close(cond[..., :tiny.L_WIDTH], expected_l, atol=1e-6, rtol=0)
    g_cond, g_pooled = sdxl_clip.clip_g.encode_tokens(sdxl_clip.clip_g.tokenize("a cat " * 50))
    torch.testing.assert_close(cond[..., tiny.L_WIDTH:], g_cond, atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], g_pooled, atol=1e-6, rtol=0)


def test_refiner_clip_is_big_g_alone(sdxl):
    clip = RefinerClip(load_clip_tokenizer(), sdxl["text_encoder_2"])
    [[cond, extra]] = clip.encode_refiner(2.0, 640, 512, "a lighthouse")
    z, out = run(sdxl["text_encoder_2"], [ids_for("a lighthouse", 0)], -2, False)
    torch.testing.assert_close(cond, z, atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], out.text_embeds, atol=1e-6, rtol=0)
    assert (extra["aesthetic_score"], extra["width"], extra["height"]) == (2.0, 640, 512)


# --- SDXL's size conditioning -----------------------------------------------------------------------

def comfy_size_embedding(values):
    """ComfyUI's Timestep(256) on each value: [cos(v·f), sin(v·f)], f_i = 10000^(−i/128), concatenated."""
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    return torch.cat([torch.cat([torch.cos(v * freqs), torch.sin(v * freqs)]) for v in values])


def test_plain_clip_text_encode_gets_comfyuis_default_sizes(pipeline):
    latent = (1, 4, 96, 80)  # 640 wide, 768 high
    ids = time_ids({"pooled_output": torch.zeros(1, 4)}, latent)
    assert ids.tolist() == [768, 640, 0, 0, 768, 640]
    reference = pipeline._get_add_time_ids((768, 640), (0, 0), (768, 640), torch.float32,
                                           text_encoder_projection_dim=tiny.G_PROJECTION)
    assert torch.equal(ids.unsqueeze(0), reference)


def test_clip_text_encode_sdxl_sizes_reach_the_unet_as_comfyui_embeds_them(pipeline):
    extra = dict(pooled_output=torch.randn(1, tiny.G_PROJECTION), width=896, height=1152, crop_w=32, crop_h=64,
                 target_width=1024, target_height=768)
    kwargs = added_cond_kwargs(extra, (2, 4, 16, 16), batch=2)
    assert kwargs["time_ids"].tolist() == [[1152, 896, 64, 32, 768, 1024]] * 2
    reference = pipeline._get_add_time_ids((1152, 896), (64, 32), (768, 1024), torch.float32,
                                           text_encoder_projection_dim=tiny.G_PROJECTION)
    assert torch.equal(kwargs["time_ids"][:1], reference)
    unet = pipeline.unet
    with torch.no_grad():
        embedded = unet.add_time_proj(kwargs["time_ids"].flatten()).reshape(2, -1)
    torch.testing.assert_close(embedded[0], comfy_size_embedding([1152, 896, 64, 32, 768, 1024]), atol=2e-5, rtol=0)
    assert torch.equal(kwargs["text_embeds"], extra["pooled_output"].expand(2, -1))


def test_refiner_sizes_and_aesthetic_score_defaults():
    from diffusers import StableDiffusionXLImg2ImgPipeline

    latent = (1, 4, 64, 64)
    assert time_ids({}, latent, "refiner").tolist() == [512, 512, 0, 0, 6.0]
    assert time_ids({}, latent, "refiner", "negative").tolist() == [512, 512, 0, 0, 2.5]
    extra = {"aesthetic_score": 3.0, "width": 1024, "height": 768}
    assert time_ids(extra, latent, "refiner", "negative").tolist() == [768, 1024, 0, 0, 3.0]

    class Stub:  # what _get_add_time_ids reads of the pipeline
        config = type("C", (), {"requires_aesthetics_score": True})()
        unet = type("U", (), {"config": type("UC", (), {"addition_time_embed_dim": 256})(),
                              "add_embedding": type("E", (), {"linear_1": torch.nn.Linear(1280 + 5 * 256, 1)})()})()

    positive, negative = StableDiffusionXLImg2ImgPipeline._get_add_time_ids(
        Stub(), (768, 1024), (0, 0), (768, 1024), 6.0, 2.5, (512, 512), (0, 0), (512, 512), torch.float32,
        text_encoder_projection_dim=1280)
    assert torch.equal(time_ids({"width": 1024, "height": 768}, latent, "refiner").unsqueeze(0), positive)
    assert torch.equal(time_ids({}, latent, "refiner", "negative").unsqueeze(0), negative)


def test_a_conditioning_without_pooled_output_is_refused():
    with pytest.raises(ValueError, match="pooled_output"):
        added_cond_kwargs({}, (1, 4, 8, 8))


def test_guider_batches_the_refiners_scores_by_prompt_type():
    """Negative gets 2.5, positive and the safety concept 6 (ComfyUI names each conditioning's prompt
    type after its input; only "negative" changes the default); explicit sizes win over the latent's."""
    from comfyui_sld.sld_core.guidance import PRESETS
    from comfyui_sld.sld_core.guiders import SLDGuider
    from comfyui_sld.sld_core.models.model import Model

    unet = tiny.build("SDXL refiner")["unet"]
    model = Model(unet, added_conditioning="refiner")

    def cond(seed, **extra):
        gen = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, 77, tiny.G_WIDTH, generator=gen), {"pooled_output": torch.randn(1, tiny.G_PROJECTION, generator=gen), **extra}]]

    positive, negative, safety = cond(1), cond(2), cond(3, width=1024, height=768)
    guider = SLDGuider(model, positive, negative, safety, 7.0, PRESETS["max"])
    context, (text_embeds, ids) = guider.contexts(("negative", "positive", "safety"), 2, (2, 4, 8, 8))
    assert context.shape == (6, 77, tiny.G_WIDTH)
    assert ids.tolist() == [[64, 64, 0, 0, 2.5]] * 2 + [[64, 64, 0, 0, 6.0]] * 2 + [[768, 1024, 0, 0, 6.0]] * 2
    expected = torch.cat([c[0][1]["pooled_output"].expand(2, -1) for c in (negative, positive, safety)])
    assert torch.equal(text_embeds, expected)
    with pytest.raises(ValueError, match="pooled output and sizes"):
        model.predict_eps(torch.zeros(1, 4, 8, 8), torch.ones(1), context[:1])
