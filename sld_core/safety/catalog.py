"""Checkers by name: the names a user picks (the `Load Safety Checker (SLD)` COMBO, `sld eval
--classifier`) and what each one loads. One mapping, so the node and the evaluation load the same
checker for the same name.

Built-in names need no files. Any other name is a Stable Diffusion concept checker the user placed in
the models folder's `safety_checker/` sub-folder (`FOLDER`); the caller resolves the name to its path,
since where model folders are is the caller's business (ComfyUI's or `--models-dir`).
"""
from .. import demo
from ..errors import SafetyCheckerError
from . import demo_pixel, nudenet_detector, open_nsfw

FOLDER = "safety_checker"  # the models/ sub-folder of users' concept checkers, as in ComfyUI
OPEN_NSFW, NUDENET = open_nsfw.NAME, nudenet_detector.NAME
DEMO_CHECKER, DEMO_PIXEL = demo.DEMO_CHECKER_DIR.name, demo_pixel.NAME  # the demo model's checkers
BUILT_IN = (OPEN_NSFW, NUDENET, DEMO_CHECKER, DEMO_PIXEL)


def built_in_names():
    """The built-in checkers usable here, in the order a user is offered them: the bundled classifier
    first (the default), NudeNet when its extra is installed, then the demo model's two checkers."""
    names = [OPEN_NSFW] if open_nsfw.available() else []
    names += [NUDENET] if nudenet_detector.available() else []
    return names + [DEMO_CHECKER, DEMO_PIXEL]


def load_checker(name, device="cpu", path=None, searched=None):
    """The checker `name` stands for: a built-in one, else the concept checker at `path` (the name
    resolved in the user's `FOLDER`, None when there is no such file; `searched` names that folder in
    the error). Fails closed with `SafetyCheckerError` naming the checker."""
    from .concept import load_concept_checker  # torch and transformers: only when a checker loads

    if name == OPEN_NSFW:
        return open_nsfw.load_open_nsfw()
    if name == NUDENET:
        return nudenet_detector.load_nudenet()
    if name == DEMO_PIXEL:
        return demo_pixel.load_demo_pixel()
    if name == DEMO_CHECKER:
        return load_concept_checker(demo.DEMO_CHECKER_DIR, device=device, name=name)
    if path is None:
        where = searched or f"the models folder's {FOLDER}/"
        raise SafetyCheckerError(name, f"no checker of that name: not built in ({', '.join(BUILT_IN)}) and not in {where}")
    return load_concept_checker(path, device=device, name=name)
