"""NudeNet's detector (optional extra `comfyui-sld[nudenet]`): YOLOv8n at 320 px, 18 body-part classes.

The `nudenet` 3.x wheel ships its ONNX model, so it runs offline. Its wheel's LICENSE file is
AGPL-3.0 (its metadata says MIT): it is never vendored here, only imported, and only when a user
picks this checker. An image is flagged when the detector finds one of `classes` (default: the
exposed parts the I2P benchmark counts) with a score ≥ threshold − sensitivity (default 0.6, I2P's
minimum score; the detector itself reports nothing under 0.2).
"""
import importlib.util

from ..errors import SafetyCheckerError
from .base import CheckResult, SafetyChecker

NAME = "nudenet"
DEFAULT_THRESHOLD = 0.6
LABELS = (  # the detector's 18 classes, in its output order
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
# I2P's nudity classes (NudeNet v2: EXPOSED_ANUS/BUTTOCKS/BREAST_F/GENITALIA_F/GENITALIA_M) in 3.x names.
DEFAULT_CLASSES = ("ANUS_EXPOSED", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED",
                   "MALE_GENITALIA_EXPOSED")


def available():
    return importlib.util.find_spec("nudenet") is not None


class NudeNetChecker(SafetyChecker):
    """A loaded `nudenet.NudeDetector`; scores are the best detection score per class found."""

    name = NAME

    def __init__(self, detector, classes=DEFAULT_CLASSES, threshold=DEFAULT_THRESHOLD):
        self.detector, self.classes, self.threshold = detector, tuple(classes), threshold

    def _check(self, pixels, sensitivity):
        threshold = self.threshold - sensitivity
        results = []
        for image in pixels:
            scores = {}
            for detection in self.detector.detect(image[:, :, ::-1].copy()):  # it reads BGR, as cv2.imread gives
                scores[detection["class"]] = max(scores.get(detection["class"], 0.0), float(detection["score"]))
            concepts = tuple(c for c in self.classes if scores.get(c, 0.0) >= threshold)
            results.append(CheckResult(bool(concepts), scores, concepts,
                                       {"threshold": round(threshold, 6), "classes": list(self.classes)}))
        return results


def load_nudenet(classes=DEFAULT_CLASSES, threshold=DEFAULT_THRESHOLD):
    unknown = sorted(set(classes) - set(LABELS))
    if unknown:
        raise SafetyCheckerError(NAME, f"unknown classes {', '.join(unknown)}")
    try:
        from nudenet import NudeDetector
    except ImportError as error:
        raise SafetyCheckerError(NAME, f"it is not installed (pip install 'comfyui-sld[nudenet]'): {error}") from error
    try:
        detector = NudeDetector()
    except Exception as error:
        raise SafetyCheckerError(NAME, f"cannot load its model: {error}") from error
    return NudeNetChecker(detector, classes, threshold)
