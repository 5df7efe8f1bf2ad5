"""Generate the CLIP BPE tokenizer files shipped in ``sld_core/models/clip_tokenizer/``.

Source: ``bpe_simple_vocab_16e6.txt.gz`` (OpenAI CLIP's merge list, MIT), as carried by the
open-clip-torch wheel. Output: ``vocab.json`` + ``merges.txt`` in the layout transformers'
``CLIPTokenizer`` loads offline (the layout of openai/clip-vit-large-patch14, which SD1.x uses), plus
``tokenizer_config.json`` / ``special_tokens_map.json`` (pad = <|endoftext|>, model_max_length 77).

Run once from the repository root:  python scripts/make_clip_tokenizer.py
The open_clip package is located, never imported (its __init__ needs torchvision).
"""
import gzip
import importlib.util
import json
import sys
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parents[1] / "sld_core" / "models" / "clip_tokenizer"
NUM_MERGES = 49152 - 256 - 2  # CLIP's vocabulary is 49408 = 2·256 bytes + 48894 merges + 2 specials
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_alphabet():
    """The reversible byte → printable-unicode table of byte-level BPE (GPT-2 / CLIP), in vocab order:
    printable latin-1 bytes map to themselves, the rest to code points from 256 upwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in printable] + [table[b] for b in range(256) if b not in printable]


def find_bpe_file():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("open-clip-torch is not installed (pip install --no-deps open-clip-torch)")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def build(bpe_path):
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : NUM_MERGES + 1]  # line 0 is a version header
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, len(vocab)
    return vocab, merges


def write(out_dir, vocab, merges):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    config = {
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "add_prefix_space": False, "errors": "replace", **special,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


if __name__ == "__main__":
    bpe = find_bpe_file()
    write(OUT_DIR, *build(bpe))
    print(f"wrote {OUT_DIR} from {bpe}")
