"""Safety checker nodes: `SLDSafetyCheckerLoader` (→ SAFETY_CHECKER) and `SLDSafetyChecker` (checks an
IMAGE batch, actions the flagged images, reports). Both fail closed: a checker that cannot load or run
raises, so nothing downstream (SaveImage) ever receives unchecked images."""
import json

from ..sld_core.errors import SafetyCheckerError
from ..sld_core.safety import ACTIONS, apply_action, load_concept_checker, report, summary
from ..sld_core import demo
from ..sld_core.safety import demo_pixel, nudenet_detector, open_nsfw
from .context import comfy_module, current_runtime, headless_active, in_comfyui
from .folders import ModelFolders

KIND = "safety_checker"
OPEN_NSFW, NUDENET = open_nsfw.NAME, nudenet_detector.NAME
DEMO_CHECKER, DEMO_PIXEL = demo.DEMO_CHECKER_DIR.name, demo_pixel.NAME  # the demo model's checkers
BUILT_IN = (OPEN_NSFW, NUDENET, DEMO_CHECKER, DEMO_PIXEL)


def _model_folders():
    """The models folder checkers are listed from: --models-dir headless, ComfyUI's `models/` inside it."""
    if in_comfyui() and not headless_active():
        return ModelFolders(comfy_module("folder_paths").models_dir)
    return current_runtime().models


def checker_names():
    """The COMBO: the bundled classifier first (the default), nudenet when installed, the demo model's
    concept checker and pixel classifier, then the concept checkers under models/safety_checker/
    (single files, or folders holding a config.json)."""
    names = [OPEN_NSFW] if open_nsfw.available() else []
    names += [NUDENET] if nudenet_detector.available() else []
    names += [DEMO_CHECKER, DEMO_PIXEL]
    return names + [n for n in _model_folders().names(KIND) if n not in BUILT_IN]


def load_named_checker(name):
    device = current_runtime().device if headless_active() else "cpu"
    return load_checker(name, _model_folders(), device)


def load_checker(name, models, device):
    """A checker by its COMBO name: a built-in one, else a concept checker listed in `models`
    (a `ModelFolders`); `SafetyCheckerError` if there is none of that name."""
    if name == OPEN_NSFW:
        return open_nsfw.load_open_nsfw()
    if name == NUDENET:
        return nudenet_detector.load_nudenet()
    if name == DEMO_PIXEL:
        return demo_pixel.load_demo_pixel()
    if name == DEMO_CHECKER:
        return load_concept_checker(demo.DEMO_CHECKER_DIR, device=device, name=name)
    path = models.path(KIND, name)
    if path is None:
        raise SafetyCheckerError(name, f"no checker of that name in the {KIND} folder")
    return load_concept_checker(path, device=device, name=name)


class SLDSafetyCheckerLoader:
    """Loads an image safety checker."""

    @classmethod
    def INPUT_TYPES(cls):
        names = checker_names()
        return {
            "required": {
                "checker_name": (names or [OPEN_NSFW], {
                    "default": OPEN_NSFW,
                    "tooltip": f"{OPEN_NSFW}: the bundled offline classifier (Yahoo open_nsfw). {NUDENET}: the NudeNet "
                               f"detector (optional extra). Others: Stable Diffusion concept checkers in models/{KIND}/.",
                }),
            }
        }

    RETURN_TYPES = ("SAFETY_CHECKER",)
    OUTPUT_TOOLTIPS = ("The loaded checker, for SLD Safety Checker.",)
    FUNCTION = "load_checker"
    CATEGORY = "SLD/safety"
    DESCRIPTION = (
        "Loads an image safety checker: the bundled open_nsfw classifier (default, offline, checksum-verified), "
        "NudeNet (when installed) or Stable Diffusion's concept checker from models/safety_checker/. "
        "A checker that cannot load stops the run."
    )

    def load_checker(self, checker_name):
        return (load_named_checker(checker_name),)


class SLDSafetyChecker:
    """Checks images; flagged ones are blacked out, blurred or only reported."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to check."}),
                "safety_checker": ("SAFETY_CHECKER", {"tooltip": "From Load Safety Checker (SLD)."}),
                "action": (list(ACTIONS), {"default": "black_out",
                                           "tooltip": "What to do with flagged images: black_out (zeros), blur (down to "
                                                      "8 px, unrecognisable) or flag_only (pass on unchanged, report only)."}),
                "sensitivity": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "0 = the checker's default rule; positive flags more, negative fewer. "
                                                     "Concept checker: diffusers' adjustment, added to every concept score. "
                                                     "open_nsfw / NudeNet: subtracted from the score threshold (0.5 / 0.6)."}),
            }
        }

    RETURN_TYPES = ("IMAGE", "BOOLEAN", "STRING")
    RETURN_NAMES = ("images", "nsfw_detected", "report")
    OUTPUT_TOOLTIPS = (
        "The images with the action applied to the flagged ones.",
        "True if any image in the batch was flagged.",
        "JSON list, one entry per image: index, checker, flagged, action, scores, concepts, and the rule used.",
    )
    FUNCTION = "check"
    CATEGORY = "SLD/safety"
    DESCRIPTION = (
        "Runs a safety checker on every image and blacks out, blurs or only flags the flagged ones. "
        "Fails closed: if the checker cannot run, the run stops and no image passes on."
    )

    def check(self, images, safety_checker, action, sensitivity):
        results = safety_checker.check(images, sensitivity)
        flags = [r.flagged for r in results]
        checked = apply_action(images, flags, action)
        text = json.dumps(report(results, safety_checker.name, action))
        line = summary(flags, action)
        return {"ui": {"safety_summary": [line]}, "result": (checked, any(flags), text)}
