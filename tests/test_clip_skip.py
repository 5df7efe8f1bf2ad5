"""CLIPSetLastLayer ("clip skip", `Clip.with_last_layer`) against transformers' own hidden states.

ComfyUI's rule (``comfy/sd1_clip.py`` ``set_clip_options``): layer -n is the n-th hidden state from the
end; the final layer norm is applied to it when the encoder's ``layer_norm_hidden_state`` says so (SD1.x:
yes; SDXL's CLIP-L and bigG: no, so -1 on SDXL is the last layer *without* the norm, unlike SDXL's default
-2); a layer deeper than the encoder means the encoder's output (normed). The pooled output never
changes. The reference is the tiny encoders' ``hidden_states`` run by transformers directly.
"""
import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)
import torch

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
from comfyui_sld.sld_core.models.sdxl_clip import SDXLClip

PROMPT = "a photo of a cat"


def reference(encoder, chunks, stop, norm):
    """transformers' hidden state ``stop`` (normed if ``norm``), or its output for a layer past the first."""
    ids = torch.tensor([[t for t, _ in c] for c in chunks])
    out = encoder(ids, output_hidden_states=True)
    if -stop > encoder.config.num_hidden_layers:
        return out.last_hidden_state.reshape(1, -1, out.last_hidden_state.shape[-1])
    z = out.hidden_states[stop]
    if norm:
        z = getattr(encoder, "text_model", encoder).final_layer_norm(z)
    return z.reshape(1, -1, z.shape[-1])


@torch.no_grad()
@pytest.mark.parametrize("stop", [-1, -2, -3])  # the tiny CLIP-L has 2 layers: -3 is past the first
def test_sd1_clip_skip_is_the_normed_hidden_state(tiny_components, stop):
    encoder = tiny_components["text_encoder"]
    clip = Clip(load_clip_tokenizer(), encoder)
    chunks = clip.tokenize(PROMPT)
    skipped = clip.with_last_layer(stop)
    cond, pooled = skipped.encode_tokens(chunks)
    assert torch.allclose(cond, reference(encoder, chunks, stop, norm=True), atol=1e-6, rtol=0)
    assert torch.equal(pooled, clip.encode_tokens(chunks)[1])
    assert clip.layer == -1  # the CLIP given is unchanged
    if stop == -2:
        assert not torch.allclose(cond, clip.encode_tokens(chunks)[0])


@torch.no_grad()
@pytest.mark.parametrize("stop", [-1, -2, -3])  # CLIP-L has 2 layers, bigG 3: at -3 CLIP-L gives its output
def test_sdxl_clip_skip_sets_both_encoders_without_the_norm(stop):
    parts = tiny_families.build("SDXL")
    clip = SDXLClip(load_clip_tokenizer(), parts["text_encoder"], parts["text_encoder_2"])
    tokens = clip.tokenize(PROMPT)
    cond, pooled = clip.with_last_layer(stop).encode_tokens(tokens)
    expected = torch.cat([reference(parts["text_encoder"], tokens["l"], stop, norm=False),
                          reference(parts["text_encoder_2"], tokens["g"], stop, norm=False)], dim=-1)
    assert torch.allclose(cond, expected, atol=1e-6, rtol=0)
    assert torch.equal(pooled, clip.encode_tokens(tokens)[1])
    default = clip.encode_tokens(tokens)[0]
    assert torch.equal(cond, default) == (stop == -2)  # SDXL's default is -2


@torch.no_grad()
def test_a_diffusers_sd2_encoder_without_its_last_layer():
    """diffusers' SD2 folders store ViT-H without its last layer: ComfyUI's -2 is their output layer,
    -1 is not there and is refused."""
    parts = tiny_families.build("SD2.x")
    encoder = parts["text_encoder"]
    clip = Clip(load_clip_tokenizer(), encoder, layer=-2, pad="zero", projected_pooled=True, dropped_layers=1)
    chunks = clip.tokenize(PROMPT)
    assert clip.num_layers == encoder.config.num_hidden_layers + 1
    cond, _ = clip.with_last_layer(-2).encode_tokens(chunks)
    assert torch.allclose(cond, reference(encoder, chunks, -1, norm=True), atol=1e-6, rtol=0)
    with pytest.raises(InvalidInputError, match="without its last 1 layer"):
        clip.with_last_layer(-1)
