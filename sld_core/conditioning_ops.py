"""ComfyUI's CONDITIONING edits (its ``ConditioningCombine``, ``...Concat``, ``...Average``,
``...SetArea``, ``...SetAreaPercentage``, ``...SetTimestepRange``, ``...ZeroOut`` nodes) as pure
functions over the CONDITIONING list ``[[embedding [1, tokens, dim], {extras}], ...]``.

They only rewrite the list: what the keys they set (``area``, ``strength``, ``start_percent``,
``end_percent``) do while sampling is `conditioning_areas`'s. Inputs are never modified; each output
entry has its own extras dict, as ComfyUI's nodes return.
"""
import logging

import torch

from .errors import InvalidInputError

log = logging.getLogger(__name__)

LATENT_CELL = 8  # pixels per latent cell: SetArea stores its pixel box in latent cells


def _with_values(conditioning, values):
    """Every entry with `values` set in a copy of its extras (ComfyUI's conditioning_set_values)."""
    return [[embedding, {**extras, **values}] for embedding, extras in conditioning]


def _first_only(conditioning_from, node):
    if len(conditioning_from) > 1:
        log.warning("%s: conditioning_from has %d entries; only the first is used, as in ComfyUI",
                    node, len(conditioning_from))
    return conditioning_from[0]


def combine(conditioning_1, conditioning_2):
    """Both lists' entries, first then second: the sampler averages their predictions."""
    return list(conditioning_1) + list(conditioning_2)


def concat(conditioning_to, conditioning_from):
    """Each entry of `conditioning_to` with the first entry of `conditioning_from`'s tokens appended."""
    from_embedding = _first_only(conditioning_from, "ConditioningConcat")[0]
    return [[torch.cat((embedding, from_embedding), 1), dict(extras)] for embedding, extras in conditioning_to]


def average(conditioning_to, conditioning_from, conditioning_to_strength):
    """Each entry of `conditioning_to` blended with the first of `conditioning_from`:
    to·s + from·(1 − s), over `to`'s token count (`from` cut, or padded with zeros), and the same for
    the pooled outputs (an entry without one takes `from`'s)."""
    strength = conditioning_to_strength
    from_embedding, from_extras = _first_only(conditioning_from, "ConditioningAverage")
    from_pooled = from_extras.get("pooled_output")
    out = []
    for embedding, extras in conditioning_to:
        tokens = embedding.shape[1]
        blend_from = from_embedding[:, :tokens]
        if blend_from.shape[1] < tokens:
            padding = torch.zeros((1, tokens - blend_from.shape[1], embedding.shape[2]), dtype=blend_from.dtype,
                                  device=blend_from.device)
            blend_from = torch.cat([blend_from, padding], dim=1)
        extras = dict(extras)
        to_pooled = extras.get("pooled_output", from_pooled)
        if from_pooled is not None and to_pooled is not None:
            # As ComfyUI: an entry with no pooled output of its own blends `from`'s with itself.
            extras["pooled_output"] = to_pooled * strength + from_pooled * (1.0 - strength)
        elif from_pooled is not None:
            extras["pooled_output"] = from_pooled
        out.append([embedding * strength + blend_from * (1.0 - strength), extras])
    return out


def zero_out(conditioning):
    """Zeros of the same shapes: the embedding, the pooled output (and ACE's lyrics, as ComfyUI)."""
    out = []
    for embedding, extras in conditioning:
        extras = dict(extras)
        for key in ("pooled_output", "conditioning_lyrics"):
            if extras.get(key) is not None:
                extras[key] = torch.zeros_like(extras[key])
        out.append([torch.zeros_like(embedding), extras])
    return out


def set_area(conditioning, width, height, x, y, strength):
    """Restrict every entry to a pixel box, stored in latent cells as (h, w, y, x) (floor division,
    as ComfyUI), with its weight `strength`."""
    area = (height // LATENT_CELL, width // LATENT_CELL, y // LATENT_CELL, x // LATENT_CELL)
    return _with_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False})


def set_area_percentage(conditioning, width, height, x, y, strength):
    """Restrict every entry to a box given as fractions of the image, resolved to latent cells when
    the image size is known (at sampling): ("percentage", h, w, y, x)."""
    return _with_values(conditioning, {"area": ("percentage", height, width, y, x), "strength": strength,
                                       "set_area_to_bounds": False})


def set_timestep_range(conditioning, start, end):
    """Apply every entry only from `start` to `end`, as fractions of the sampling (0 = the first,
    noisiest step). ComfyUI accepts start ≥ end, giving an entry that never applies; we refuse it."""
    if start >= end:
        raise InvalidInputError(f"end: the range from start {start} to end {end} is empty (end must be greater "
                                "than start), so this conditioning would never apply")
    return _with_values(conditioning, {"start_percent": start, "end_percent": end})
