"""Image safety checkers behind one interface, `check(images, sensitivity) -> [CheckResult]`, and the
policies for flagged images.

- `open_nsfw`: Yahoo's open_nsfw classifier, bundled through a pip dependency, checksum-verified;
  the default on a fresh machine (`load_open_nsfw`).
- the Stable Diffusion concept checker, from local weights (`load_concept_checker`).
- `nudenet`: NudeNet's detector, an optional extra (`load_nudenet`).

`catalog` maps the names a user picks (node COMBO, `sld eval --classifier`) to these loaders.

Every checker fails closed: if it cannot load or run it raises `SafetyCheckerError`, never returns
images unchecked. The policies (`apply_action`) black out, blur or only flag.
"""
from ..errors import SafetyCheckerError
from .base import CheckResult, SafetyChecker
from .nudenet_detector import NudeNetChecker, load_nudenet
from .open_nsfw import OpenNSFWChecker, load_open_nsfw
from .policies import ACTIONS, apply_action, report, summary

__all__ = [
    "ACTIONS", "CheckResult", "ConceptChecker", "NudeNetChecker", "OpenNSFWChecker", "SafetyChecker",
    "SafetyCheckerError", "apply_action", "load_concept_checker", "load_nudenet", "load_open_nsfw",
    "report", "summary",
]


def __getattr__(name):
    # The concept checker brings torch and transformers: imported on first use, so that listing the
    # checkers (validation, `sld nodes`) needs neither.
    if name in ("ConceptChecker", "load_concept_checker"):
        from . import concept

        return getattr(concept, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
