"""SDXL's text encoding as ComfyUI does it (``comfy/sdxl_clip.py``, ``comfy_extras/nodes_clip_sdxl.py``).

SDXL base has two encoders: CLIP-L (penultimate layer, no final norm, padded with the end token) and
OpenCLIP bigG (penultimate layer, no final norm, padded with 0, pooled output through its projection).
A prompt is tokenized for each; each is chunked, weighted and encoded as `clip.Clip` does, and the two
are joined along the feature axis: ``[1, 77·k, 768 + 1280]``. The pooled output is bigG's alone.
The refiner has bigG only (`RefinerClip`): ``[1, 77·k, 1280]`` and its pooled output.

The size conditioning SDXL's UNet also receives travels in the CONDITIONING's extra dict, with
ComfyUI's keys: ``width``, ``height``, ``crop_w``, ``crop_h``, ``target_width``, ``target_height``
(`SDXLClip.encode_sdxl`, the CLIPTextEncodeSDXL node) or ``width``, ``height``, ``aesthetic_score``
(`RefinerClip.encode_refiner`, CLIPTextEncodeSDXLRefiner). A plain ``encode`` (CLIPTextEncode) adds
none; the defaults are then filled in at sampling time (`sdxl_conditioning`).
"""
import copy

import torch

from .clip import Clip
from .families import CLIP_G_SDXL, CLIP_L_SDXL


class SDXLClip:
    """CLIP-L + bigG (headless ``CLIP`` of an SDXL base checkpoint)."""

    # Where it was loaded from (as on `clip.Clip`).
    checkpoint = None  # the file or folder name
    family = None  # families.FAMILIES key

    def __init__(self, tokenizer, clip_l_encoder, clip_g_encoder):
        self.clip_l = Clip.for_spec(tokenizer, clip_l_encoder, CLIP_L_SDXL)
        self.clip_g = Clip.for_spec(tokenizer, clip_g_encoder, CLIP_G_SDXL)
        self.tokenizer = tokenizer

    def with_last_layer(self, stop_at_clip_layer):
        """A copy whose two encoders both stop at ``stop_at_clip_layer`` (ComfyUI's CLIPSetLastLayer sets
        both; neither applies the final layer norm to a chosen layer, so -1 is the last layer un-normed)."""
        clone = copy.copy(self)
        clone.clip_l = self.clip_l.with_last_layer(stop_at_clip_layer)
        clone.clip_g = self.clip_g.with_last_layer(stop_at_clip_layer)
        return clone

    def tokenize(self, text):
        """{"l": chunks, "g": chunks} for one prompt (ComfyUI's SDXLTokenizer)."""
        return {"l": self.clip_l.tokenize(text), "g": self.clip_g.tokenize(text)}

    def encode_tokens(self, tokens):
        """(cond [1, 77·k, L+G], pooled [1, P]) for tokenized chunks of both encoders."""
        l_cond, _ = self.clip_l.encode_tokens(tokens["l"])
        g_cond, g_pooled = self.clip_g.encode_tokens(tokens["g"])
        cut = min(l_cond.shape[1], g_cond.shape[1])  # ComfyUI keeps the shorter length
        return torch.cat([l_cond[:, :cut], g_cond[:, :cut]], dim=-1), g_pooled

    def encode(self, text):
        """CONDITIONING of CLIPTextEncode: ``[[cond, {"pooled_output": pooled}]]``, no size keys."""
        cond, pooled = self.encode_tokens(self.tokenize(text))
        return [[cond, {"pooled_output": pooled}]]

    def encode_sdxl(self, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        """CONDITIONING of CLIPTextEncodeSDXL: ``text_g`` for bigG, ``text_l`` for CLIP-L; the one with
        fewer chunks is padded with chunks of the empty prompt; the sizes go into the extra dict."""
        tokens = {"g": self.clip_g.tokenize(text_g), "l": self.clip_l.tokenize(text_l)}
        for name, clip, other in (("l", self.clip_l, "g"), ("g", self.clip_g, "l")):
            while len(tokens[name]) < len(tokens[other]):
                tokens[name] = tokens[name] + clip.tokenize("")
        cond, pooled = self.encode_tokens(tokens)
        sizes = dict(width=width, height=height, crop_w=crop_w, crop_h=crop_h,
                     target_width=target_width, target_height=target_height)
        return [[cond, {"pooled_output": pooled, **sizes}]]


class RefinerClip(Clip):
    """bigG alone (headless ``CLIP`` of an SDXL refiner checkpoint)."""

    def __init__(self, tokenizer, clip_g_encoder):
        spec = CLIP_G_SDXL
        super().__init__(tokenizer, clip_g_encoder, spec.layer, spec.final_norm, spec.pad, spec.projected_pooled)

    def encode_refiner(self, ascore, width, height, text):
        """CONDITIONING of CLIPTextEncodeSDXLRefiner: the prompt plus ``aesthetic_score``, ``width``, ``height``."""
        [[cond, extra]] = self.encode(text)
        return [[cond, {**extra, "aesthetic_score": ascore, "width": width, "height": height}]]
