"""Clip: ComfyUI's SD1 prompt syntax, chunking and weighting; the shipped tokenizer vs. open_clip's."""
import gzip
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer, parse_prompt_weights

BOS, EOS = 49406, 49407
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tiny_components):
    return Clip(load_clip_tokenizer(), tiny_components["text_encoder"])


@pytest.mark.parametrize("prompt, expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat) dog", [("a ", 1.0), ("cat", 1.1), (" dog", 1.0)]),
    ("((cat))", [("cat", pytest.approx(1.21))]),
    ("(((cat)))", [("cat", pytest.approx(1.331))]),
    ("(cat:1.5)", [("cat", 1.5)]),
    ("((cat:0.5))", [("cat", 0.5)]),  # an explicit weight replaces the nested 1.1 factors
    ("(red (cat:1.3) hat)", [("red ", 1.1), ("cat", 1.3), (" hat", 1.1)]),
    ("(a:b)", [("a:b", pytest.approx(1.1))]),  # not a number: the colon is text
    ("(:2)", [(":2", pytest.approx(1.1))]),  # a colon at the start is text
    ("(cat", [("(cat", 1.0)]),  # unbalanced: literal
    ("cat) (dog", [("cat) (dog", 1.0)]),
    ("\\(cat\\) (dog)", [("(cat) ", 1.0), ("dog", 1.1)]),  # escaped parentheses are literal
    ("(\\(cat\\):1.2)", [("(cat)", 1.2)]),
])
def test_weight_syntax(prompt, expected):
    assert parse_prompt_weights(prompt) == expected


def ids(chunk):
    return [t for t, _ in chunk]


def test_unweighted_prompt_equals_the_diffusers_encoding(clip, tiny_components):
    prompt = "a photo of an astronaut riding a horse on mars, 4k"
    chunks = clip.tokenize(prompt)
    reference_ids = clip.tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(chunks) == 1 and ids(chunks[0]) == reference_ids
    assert ids(chunks[0])[:11] == [BOS, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496]
    [[cond, extra]] = clip.encode(prompt)
    with torch.no_grad():
        out = tiny_components["text_encoder"](torch.tensor([reference_ids]))
    assert cond.shape == (1, 77, 32) and cond.dtype == torch.float32
    torch.testing.assert_close(cond, out[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], out.pooler_output, atol=1e-6, rtol=0)


def test_long_prompt_is_split_into_77_token_chunks(clip, tiny_components):
    chunks = clip.tokenize("word " * 100)
    assert [len(c) for c in chunks] == [77, 77]
    assert ids(chunks[0]) == [BOS] + [2653] * 75 + [EOS]
    assert ids(chunks[1]) == [BOS] + [2653] * 25 + [EOS] * 51
    [[cond, extra]] = clip.encode("word " * 100)
    assert cond.shape == (1, 154, 32)
    with torch.no_grad():
        out = tiny_components["text_encoder"](torch.tensor([ids(c) for c in chunks]))
    torch.testing.assert_close(cond, out[0].reshape(1, 154, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(extra["pooled_output"], out.pooler_output[:1], atol=1e-6, rtol=0)


def test_short_weighted_piece_moves_whole_to_the_next_chunk(clip):
    chunks = clip.tokenize("word " * 72 + "(a b c d e:1.2)")
    assert ids(chunks[0]) == [BOS] + [2653] * 72 + [EOS] * 4
    piece = clip.tokenizer("a b c d e", add_special_tokens=False)["input_ids"]
    assert len(piece) == 5 and chunks[1][1:7] == [(t, 1.2) for t in piece] + [(EOS, 1.0)]


def test_long_weighted_piece_is_split_where_the_chunk_ends(clip):
    chunks = clip.tokenize("word " * 70 + "(" + "cat " * 10 + ":1.2)")
    assert chunks[0][71:] == [(2368, 1.2)] * 5 + [(EOS, 1.0)]
    assert chunks[1][:7] == [(BOS, 1.0)] + [(2368, 1.2)] * 5 + [(EOS, 1.0)]


def test_weights_interpolate_from_the_empty_prompt(clip, tiny_components):
    chunks = clip.tokenize("a (red:1.5) cat")
    assert [w for _, w in chunks[0][:5]] == [1.0, 1.0, 1.5, 1.0, 1.0]
    [[cond, extra]] = clip.encode("a (red:1.5) cat")
    empty = [BOS, EOS] + [EOS] * 75
    with torch.no_grad():
        z, z_empty = tiny_components["text_encoder"](torch.tensor([ids(chunks[0]), empty]))[0]
    expected = z.clone()
    expected[2] = (z[2] - z_empty[2]) * 1.5 + z_empty[2]
    torch.testing.assert_close(cond[0], expected, atol=1e-6, rtol=0)
    assert torch.equal(cond[0, [0, 1, 3, 4]], z[[0, 1, 3, 4]])  # weight-1 tokens untouched
    unweighted = clip.encode("a red cat")[0][1]["pooled_output"]
    torch.testing.assert_close(extra["pooled_output"], unweighted, atol=1e-6, rtol=0)  # pooled ignores weights


def test_embedding_names_are_dropped(clip):
    assert ids(clip.tokenize("a cat embedding:foo, dog")[0])[:6] == ids(clip.tokenize("a cat , dog")[0])[:6]


# --- the shipped tokenizer --------------------------------------------------------------------------

def open_clip_tokenizer_module():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open-clip-torch is not installed (CI installs it with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
    # Load tokenizer.py on its own: open_clip/__init__.py needs torchvision.
    module_spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


PROMPTS = [
    "a photo of an astronaut riding a horse on mars",
    "Café crème brûlée, naïve façade — 東京タワー 🚀🔥",
    "Hello!!! What's up?? (1920x1080) 3.14159 $100 #tag @user ~~ <html>",
    "don't you'll we're I'm they've she'd it's O'Neil",
    "  multiple   spaces\ttabs\nnewlines  ",
    "UPPER lower MiXeD CamelCaseWords",
    "numbers 1234567890 and 2024-01-01, 1e-5",
    "emoji 👩‍👩‍👧 and ñ Ω ß Ж अ ا",
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, bodily "
    "fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, "
    "brutality, cruelty",
    "supercalifragilisticexpialidocious " * 20,
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_tokenizer_matches_open_clip(prompt):
    """Same BPE ids as OpenAI's tokenizer (open_clip's copy). Known, intended difference: transformers'
    CLIPTokenizer, which ComfyUI and diffusers use, skips ftfy/HTML clean-up (so ``&amp;``, curly quotes,
    ligatures and full-width letters tokenize differently); we follow ComfyUI."""
    reference = open_clip_tokenizer_module().SimpleTokenizer()
    ours = load_clip_tokenizer()(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    assert ours == reference.encode(prompt)


def test_shipped_files_are_what_the_script_generates():
    module = open_clip_tokenizer_module()
    spec = importlib.util.spec_from_file_location("_make_tok", REPO / "scripts" / "make_clip_tokenizer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    vocab, merges = script.build(script.find_bpe_file())
    folder = REPO / "sld_core" / "models" / "clip_tokenizer"
    assert json.loads((folder / "vocab.json").read_text(encoding="utf-8")) == vocab
    assert (folder / "merges.txt").read_text(encoding="utf-8").split("\n")[1:-1] == merges
    reference = module.SimpleTokenizer().encoder
    renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    assert {renamed.get(k, k): v for k, v in reference.items()} == vocab
    with gzip.open(script.find_bpe_file()) as f:
        assert f.readline().startswith(b"\"bpe_simple_vocab_16e6.txt")


def test_tokenizer_special_tokens():
    tokenizer = load_clip_tokenizer()
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (BOS, EOS, EOS)
    assert tokenizer.model_max_length == 77 and len(tokenizer) == 49408


@pytest.mark.parametrize("prompt", ["(a cat:1e400)", "(a cat:inf)", "((a:nan) dog)"])
def test_a_weight_that_is_not_a_finite_number_is_refused(prompt):
    """float() accepts these; encoded, they would turn the whole conditioning (and the image) into NaN."""
    with pytest.raises(InvalidInputError, match="not a finite number"):
        parse_prompt_weights(prompt)
