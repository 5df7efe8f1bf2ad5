"""ComfyUI's conditioning nodes for headless mode (inside ComfyUI its own are used): `ConditioningCombine`,
`ConditioningConcat`, `ConditioningAverage`, `ConditioningSetArea`, `ConditioningSetAreaPercentage`,
`ConditioningSetTimestepRange`, `ConditioningZeroOut`.

Same names, inputs, defaults, ranges and outputs as ComfyUI 0.3.64's ``nodes.py``; the list edits are
`sld_core.conditioning_ops`'s, what areas and ranges do while sampling `sld_core.conditioning_areas`'s.
"""
from .latent import MAX_RESOLUTION

_CONDITIONING = ("CONDITIONING",)
_STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})


def _ops():
    """sld_core's conditioning edits, imported when a node runs (`sld nodes`/`validate` load no torch)."""
    from ..sld_core import conditioning_ops

    return conditioning_ops


def _pixels(default, minimum):
    return ("INT", {"default": default, "min": minimum, "max": MAX_RESOLUTION, "step": 8})


def _fraction(default, step=0.01):
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": step})


class ConditioningCombine:
    """Both conditionings' entries in one list: the sampler averages their predictions."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_1": _CONDITIONING, "conditioning_2": _CONDITIONING}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "combine"
    CATEGORY = "conditioning"

    def combine(self, conditioning_1, conditioning_2):
        return (_ops().combine(conditioning_1, conditioning_2),)


class ConditioningAverage:
    """Blend of the embeddings (and pooled outputs): to·strength + from·(1 − strength)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_to": _CONDITIONING, "conditioning_from": _CONDITIONING,
                             "conditioning_to_strength": _fraction(1.0)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "addWeighted"
    CATEGORY = "conditioning"

    def addWeighted(self, conditioning_to, conditioning_from, conditioning_to_strength):  # noqa: N802 (ComfyUI's name)
        return (_ops().average(conditioning_to, conditioning_from, conditioning_to_strength),)


class ConditioningConcat:
    """conditioning_from's tokens appended to each entry of conditioning_to."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_to": _CONDITIONING, "conditioning_from": _CONDITIONING}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "concat"
    CATEGORY = "conditioning"

    def concat(self, conditioning_to, conditioning_from):
        return (_ops().concat(conditioning_to, conditioning_from),)


class ConditioningSetArea:
    """The conditioning applies to a box of the image (pixels, in steps of 8), with a strength."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": _CONDITIONING, "width": _pixels(64, 64), "height": _pixels(64, 64),
                             "x": _pixels(0, 0), "y": _pixels(0, 0), "strength": _STRENGTH}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning, width, height, x, y, strength):
        return (_ops().set_area(conditioning, width, height, x, y, strength),)


class ConditioningSetAreaPercentage:
    """The conditioning applies to a box given as fractions of the image's width and height."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": _CONDITIONING, "width": _fraction(1.0), "height": _fraction(1.0),
                             "x": _fraction(0.0), "y": _fraction(0.0), "strength": _STRENGTH}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "conditioning"

    def append(self, conditioning, width, height, x, y, strength):
        return (_ops().set_area_percentage(conditioning, width, height, x, y, strength),)


class ConditioningSetTimestepRange:
    """The conditioning applies only from `start` to `end` of the sampling (fractions; 0 = first step)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": _CONDITIONING, "start": _fraction(0.0, 0.001),
                             "end": _fraction(1.0, 0.001)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "set_range"
    CATEGORY = "advanced/conditioning"

    def set_range(self, conditioning, start, end):
        return (_ops().set_timestep_range(conditioning, start, end),)


class ConditioningZeroOut:
    """All zeros (embedding and pooled output): e.g. an empty negative for SDXL."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": _CONDITIONING}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "zero_out"
    CATEGORY = "advanced/conditioning"

    def zero_out(self, conditioning):
        return (_ops().zero_out(conditioning),)
