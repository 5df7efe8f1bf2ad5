"""The interface every image safety checker implements, and the per-image result it returns.

A checker is called as `check(images, sensitivity)` on a ComfyUI IMAGE batch (`[B,H,W,3]` float in
0..1) and returns one `CheckResult` per image, in order. `check` fails closed: whatever goes wrong
inside a checker (a runtime error, a result of the wrong length, a NaN score) surfaces as one
`SafetyCheckerError` naming the checker, never as a batch that passes unchecked.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import SafetyCheckerError


@dataclass(frozen=True)
class CheckResult:
    """One image's verdict. `scores` maps a score name to its value; `concepts` names the ones that
    fired (the reason for `flagged`); `details` holds the checker's rule (threshold, adjustment...)."""

    flagged: bool
    scores: dict
    concepts: tuple = ()
    details: dict = field(default_factory=dict)


class SafetyChecker:
    """Base of the checkers: subclasses set `name` and implement `_check(pixels, sensitivity)` over a
    uint8 `[B,H,W,3]` array (the images as a PNG would store them)."""

    name = "safety checker"

    def check(self, images, sensitivity=0.0):
        """Per-image `CheckResult`s for an IMAGE batch. `sensitivity` 0 is the checker's default rule;
        positive flags more, negative fewer (each checker documents its mapping)."""
        pixels = to_uint8(images, self.name)
        try:
            results = list(self._check(pixels, float(sensitivity)))
        except SafetyCheckerError:
            raise
        except Exception as error:  # a checker that cannot run must stop the run, not pass images on
            raise SafetyCheckerError(self.name, f"{type(error).__name__}: {error}") from error
        if len(results) != len(pixels):
            raise SafetyCheckerError(self.name, f"returned {len(results)} results for {len(pixels)} images")
        for result in results:
            if not all(math.isfinite(v) for v in result.scores.values()):
                raise SafetyCheckerError(self.name, f"returned a non-finite score {result.scores}")
        return results

    def _check(self, pixels, sensitivity):
        raise NotImplementedError

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


def to_uint8(images, name):
    """IMAGE `[B,H,W,3]` (torch or numpy, 0..1) → uint8 numpy as diffusers' `numpy_to_pil` makes it:
    ×255, rounded. Non-finite pixels are refused: no checker can vouch for them."""
    if not isinstance(images, np.ndarray) and hasattr(images, "detach"):  # a torch tensor (torch is loaded then)
        import torch

        images = images.detach().to("cpu", torch.float32).numpy()
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise SafetyCheckerError(name, f"expected an IMAGE batch [B,H,W,3], got shape {tuple(images.shape)}")
    if not np.isfinite(images).all():
        raise SafetyCheckerError(name, "the images hold NaN or infinite pixels")
    return (images.clip(0.0, 1.0) * 255).round().astype(np.uint8)
