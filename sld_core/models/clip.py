"""`Clip`: the CLIP tokenizer and one text encoder behind ComfyUI's ``CLIPTextEncode``.

Written for SD1.x's CLIP-L; the same class runs SD2's OpenCLIP ViT-H and SDXL's two encoders
(`sdxl_clip` combines those) with the options ComfyUI gives them (`families.TextEncoderSpec`): which
hidden layer, whether the final layer norm applies to it, the padding token, and whether the pooled
output is projected. SD1.x: last layer, normed, pad with the end token, un-projected pooled output.

Prompt syntax and encoding follow ComfyUI's SD1 text encoder, so one prompt gives the same
CONDITIONING in ComfyUI and here:

* ``(text)`` multiplies the weight of ``text`` by 1.1 per level of nesting, ``(text:1.3)`` sets it (the
  number replaces the nested factor); ``\\(`` and ``\\)`` are literal parentheses.
* Tokens go into chunks of 75 between ``<|startoftext|>`` and ``<|endoftext|>``, padded with
  ``<|endoftext|>`` to 77. A weighted piece shorter than 8 tokens that does not fit in the current
  chunk starts the next one; longer pieces are split where the chunk ends.
* Each chunk is encoded separately (last layer, after the final layer norm) and the results are
  concatenated: ``[1, 77·k, dim]``. A token of weight w becomes z_empty + w·(z − z_empty), where
  z_empty is the encoding of the empty prompt at the same position. ``pooled_output`` is the first
  chunk's pooled (un-projected) output, as ComfyUI's SD1 checkpoint CLIP returns.

``embedding:NAME`` (textual inversion) is not supported: the name is dropped with a warning, which is
what ComfyUI does when it cannot find the embedding.
"""
import copy
import logging
import math
import re
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import InvalidInputError

TOKENIZER_DIR = Path(__file__).resolve().parent / "clip_tokenizer"
CHUNK_LENGTH = 77
PAREN_WEIGHT = 1.1
KEEP_TOGETHER = 8  # pieces shorter than this many tokens are not split across chunks
_OPEN, _CLOSE = "\ue000", "\ue001"  # stand-ins for escaped parentheses while parsing
EMBEDDING = "embedding:"

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def load_clip_tokenizer():
    """The CLIP-L BPE tokenizer shipped in the package (pad = <|endoftext|>, 77 tokens); no downloads."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)


def parse_prompt_weights(text):
    """Split a prompt into ``(piece, weight)`` pairs by its parentheses (see the module docstring)."""
    text = text.replace("\\(", _OPEN).replace("\\)", _CLOSE)
    return [(_unescape(piece), weight) for piece, weight in _weigh(text, 1.0)]


def _unescape(text):
    return text.replace(_OPEN, "(").replace(_CLOSE, ")")


def _weigh(text, weight):
    out = []
    for group in _top_level_groups(text):
        if len(group) >= 2 and group[0] == "(" and group[-1] == ")":
            inner, inner_weight = group[1:-1], weight * PAREN_WEIGHT
            colon = inner.rfind(":")
            if colon > 0:
                try:
                    inner_weight = float(inner[colon + 1:])
                    inner = inner[:colon]
                except ValueError:
                    pass
                if not math.isfinite(inner_weight):  # ComfyUI would encode it and sample a NaN (black) image
                    raise InvalidInputError(f"prompt weight in {group[:60]!r} is not a finite number")
            out += _weigh(inner, inner_weight)
        else:
            out.append((group, weight))
    return out


def _top_level_groups(text):
    """Cut text into runs of plain text and top-level ``(...)`` groups. An unmatched ``(`` opens a group
    that runs to the end; an unmatched ``)`` is plain text (depth goes negative until re-balanced)."""
    groups, current, depth = [], "", 0
    for char in text:
        if char == "(":
            if depth == 0 and current:
                groups.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            current += char
            if depth == 0:
                groups.append(current)
                current = ""
        else:
            current += char
    if current:
        groups.append(current)
    return groups


def _words(piece):
    """A weighted piece split before each ``embedding:`` name, embedding names dropped."""
    parts = re.split(f" {EMBEDDING}|\n{EMBEDDING}", piece)
    words = [parts[0]] + [EMBEDDING + p for p in parts[1:]]
    for word in filter(None, words):
        if word.startswith(EMBEDDING):
            name, *rest = word[len(EMBEDDING):].strip("\n").split() or [""]
            rest = " ".join(rest)
            stripped = name.strip(",")
            log.warning("textual-inversion embeddings are not supported; ignoring %s%s", EMBEDDING, stripped)
            word = f"{name[len(stripped):]} {rest}" if len(stripped) < len(name) else rest
            if not word:
                continue
        yield word


class Clip:
    """CLIP tokenizer + ``transformers.CLIPTextModel`` (or ``CLIPTextModelWithProjection``): ComfyUI's
    CLIP for SD1.x/SD2.x, one half of SDXL's (headless ``CLIP``).

    ``layer``: the hidden state used, counted from the end (-1 last, -2 penultimate: ComfyUI's
    ``layer_idx``), or None for the encoder's output (the last layer after the final layer norm: ComfyUI's
    "last"); ``final_norm``: apply the final layer norm to a chosen hidden state (ComfyUI's
    ``layer_norm_hidden_state``; -1 with it is the encoder's output); ``pad``: "end" (pad with the end
    token, CLIP-L) or "zero" (token 0, OpenCLIP encoders); ``projected_pooled``: the pooled output is
    ``text_embeds`` (through ``text_projection``). ``dropped_layers``: layers the stored encoder lacks at
    its end (1 for a diffusers SD2 folder), so that ``layer`` keeps ComfyUI's count.
    """

    # Where it was loaded from (`checkpoint.load_checkpoint` sets them), for errors that name it.
    checkpoint = None  # the file or folder name
    family = None  # families.FAMILIES key

    def __init__(self, tokenizer, text_encoder, layer=-1, final_norm=True, pad="end", projected_pooled=False,
                 dropped_layers=0):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.pad = self.eos if pad == "end" else 0
        self.layer, self.final_norm, self.projected_pooled = layer, final_norm, projected_pooled
        self.dropped_layers = dropped_layers

    @classmethod
    def for_spec(cls, tokenizer, text_encoder, spec, last_layer_dropped=False):
        """A Clip running ``text_encoder`` as `families.TextEncoderSpec` ``spec`` says. diffusers folders
        of SD2 store ViT-H without its last layer (their pipelines use the penultimate layer's output as
        their last): ``last_layer_dropped`` makes ComfyUI's "penultimate" the stored last layer, and
        without a ``text_projection`` the pooled output is left un-projected."""
        projected = spec.projected_pooled and hasattr(text_encoder, "text_projection")
        return cls(tokenizer, text_encoder, spec.layer, spec.final_norm, spec.pad, projected, int(last_layer_dropped))

    @property
    def num_layers(self):
        """Layers of the encoder as ComfyUI counts them (those a diffusers SD2 folder dropped included)."""
        return self.text_encoder.config.num_hidden_layers + self.dropped_layers

    def with_last_layer(self, stop_at_clip_layer):
        """A copy encoding from hidden layer ``stop_at_clip_layer`` (-1 last, -2 penultimate, ...): ComfyUI's
        CLIPSetLastLayer. The final layer norm follows the encoder's rule (SD1.x/SD2.x apply it, SDXL's
        encoders do not, so -1 on SDXL is the last layer un-normed); a layer deeper than the encoder means
        its output, as in ComfyUI. The pooled output does not change. This Clip is left as it is."""
        if stop_at_clip_layer >= 0:
            raise InvalidInputError(f"stop_at_clip_layer counts from the end (-1 is the last layer), got {stop_at_clip_layer}")
        layer = None if stop_at_clip_layer < -self.num_layers else stop_at_clip_layer
        if self.dropped_layers and (layer is None or layer + self.dropped_layers >= 0):
            raise InvalidInputError(f"clip layer {stop_at_clip_layer} is not stored in this CLIP: it was saved (a "
                                    f"diffusers SD2 folder) without its last {self.dropped_layers} layer(s)")
        clone = copy.copy(self)
        clone.layer = layer
        return clone

    def tokenize(self, text):
        """Chunks of 77 ``(token_id, weight)`` pairs for a prompt."""
        groups = []
        for piece, weight in parse_prompt_weights(text):
            for word in _words(piece):
                ids = self.tokenizer(word, add_special_tokens=False, verbose=False)["input_ids"]
                groups.append([(t, weight) for t in ids])
        room = CHUNK_LENGTH - 1  # the last slot of a chunk is the end token
        chunks = [[(self.bos, 1.0)]]
        for group in groups:
            keep_together = len(group) < KEEP_TOGETHER
            while group:
                chunk = chunks[-1]
                free = room - len(chunk)
                if len(group) <= free:
                    chunk += group
                    group = []
                    continue
                if keep_together:
                    chunk += [(self.eos, 1.0)] + [(self.pad, 1.0)] * free
                else:
                    chunk += group[:free] + [(self.eos, 1.0)]
                    group = group[free:]
                chunks.append([(self.bos, 1.0)])
        last = chunks[-1]
        last += [(self.eos, 1.0)] + [(self.pad, 1.0)] * (CHUNK_LENGTH - 1 - len(last))
        return chunks

    def encode_tokens(self, chunks):
        """(cond [1, 77·k, dim], pooled [1, dim]) in float32 on the CPU for tokenized chunks."""
        weights = torch.tensor([[w for _, w in c] for c in chunks], dtype=torch.float32)
        ids = [[t for t, _ in c] for c in chunks]
        weighted = bool((weights != 1.0).any())
        if weighted:  # the empty prompt, for z_empty
            ids.append([self.bos, self.eos] + [self.pad] * (CHUNK_LENGTH - 2))
        device = self.text_encoder.get_input_embeddings().weight.device
        with torch.no_grad():
            as_output = self.layer is None or (self.layer == -1 and self.final_norm and not self.dropped_layers)
            out = self.text_encoder(torch.tensor(ids, device=device), output_hidden_states=not as_output)
            if as_output:
                z = out.last_hidden_state
            else:
                z = out.hidden_states[self.layer + self.dropped_layers]
                if self.final_norm:
                    z = getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm(z)
            pooled = out.text_embeds if self.projected_pooled else out.pooler_output
        z = z.float().cpu()
        pooled = pooled[0:1].float().cpu()
        cond = z[: len(chunks)]
        if weighted:
            empty = z[-1:]
            w = weights.unsqueeze(-1)
            cond = torch.where(w != 1.0, (cond - empty) * w + empty, cond)
        return cond.reshape(1, -1, cond.shape[-1]), pooled

    def encode(self, text):
        """CONDITIONING for a prompt: ``[[cond, {"pooled_output": pooled}]]`` (ComfyUI's CLIPTextEncode)."""
        cond, pooled = self.encode_tokens(self.tokenize(text))
        return [[cond, {"pooled_output": pooled}]]
