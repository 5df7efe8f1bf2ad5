"""Safety checker nodes: `SLDSafetyCheckerLoader` (→ SAFETY_CHECKER) and `SLDSafetyChecker` (checks an
IMAGE batch, actions the flagged images, reports). Both fail closed: a checker that cannot load or run
raises, so nothing downstream (SaveImage) ever receives unchecked images."""
import json

from ..sld_core.safety import ACTIONS, apply_action, report, summary
from ..sld_core.safety.catalog import BUILT_IN, FOLDER, NUDENET, OPEN_NSFW, built_in_names, load_checker
from .context import comfy_module, current_runtime, headless_active, in_comfyui
from .folders import ModelFolders


def _model_folders():
    """The folders checkers are listed from: --models-dir/--comfyui-dir headless; inside ComfyUI its
    `models/` and any `safety_checker` folders its extra_model_paths.yaml registered."""
    if in_comfyui() and not headless_active():
        folder_paths = comfy_module("folder_paths")
        models = ModelFolders(folder_paths.models_dir)
        if FOLDER in folder_paths.folder_names_and_paths:  # ComfyUI registers any kind its YAML names
            for folder in folder_paths.get_folder_paths(FOLDER):
                models.add(FOLDER, folder)
        return models
    return current_runtime().models


def checker_names():
    """The COMBO: the built-in checkers (sld_core.safety.catalog), then the concept checkers under
    models/safety_checker/ (single files, or folders holding a config.json)."""
    return built_in_names() + [n for n in _model_folders().names(FOLDER) if n not in BUILT_IN]


def load_named_checker(name):
    device = current_runtime().device if headless_active() else "cpu"
    models = _model_folders()
    path = None if name in BUILT_IN else models.path(FOLDER, name)
    return load_checker(name, device, path, searched=models.describe(FOLDER))


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
                               f"detector (optional extra). Others: Stable Diffusion concept checkers in models/{FOLDER}/.",
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
                                                     "Concept checker: added to every score (cos − threshold), "
                                                     "plus diffusers' 0.01 once a special-care concept fires. "
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
