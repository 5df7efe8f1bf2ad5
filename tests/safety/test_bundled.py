"""The bundled open_nsfw classifier: offline (sockets blocked), a plain gradient scores < 0.01, the
model file's sha256 is checked at load and a tampered or truncated copy is refused; and NudeNet
(the `nudenet` extra, which CI installs): offline, a gradient is not flagged, the committed abstract
fixture (scripts/make_nudenet_fixture.py) is."""
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_sld.sld_core.errors import SafetyCheckerError
from comfyui_sld.sld_core.safety import load_nudenet, load_open_nsfw
from comfyui_sld.sld_core.safety import nudenet_detector, open_nsfw

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nudenet_positive.png"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def gradient(height=64, width=64):
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    return torch.stack([x, y, torch.full_like(x, 0.5)], -1)[None]


def test_open_nsfw_runs_offline_and_a_gradient_is_safe(no_network):
    checker = load_open_nsfw(threads=1)
    [result] = checker.check(gradient())
    assert result.scores["nsfw"] < 0.01 and not result.flagged
    assert result.details["threshold"] == 0.5
    [strict] = checker.check(gradient(), sensitivity=0.5)  # threshold 0: everything is flagged
    assert strict.flagged and strict.concepts == ("nsfw",)


def test_open_nsfw_model_matches_the_pinned_checksum():
    import hashlib

    path, sha256 = open_nsfw.bundled_model()
    assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert sha256 in {pin for _, _, pin in open_nsfw.MODEL_FILES}


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_open_nsfw_refuses_a_damaged_model(tmp_path, damage):
    path, sha256 = open_nsfw.bundled_model()
    data = bytearray(path.read_bytes())
    copy = tmp_path / "open-nsfw.onnx"
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0x01
        copy.write_bytes(bytes(data))
    elif damage == "truncated":
        copy.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(SafetyCheckerError) as error:
        load_open_nsfw(path=copy, sha256=sha256)
    message = str(error.value)
    assert "'open_nsfw'" in message and "\n" not in message
    assert ("checksum" in message) if damage != "missing" else ("cannot read" in message)
    # an intact copy under the same pin loads
    if damage == "missing":
        copy.write_bytes(path.read_bytes())
        load_open_nsfw(path=copy, sha256=sha256)


def test_nudenet_class_list_is_the_detectors():
    import nudenet.nudenet

    assert list(nudenet_detector.LABELS) == vars(nudenet.nudenet)["__labels"]
    assert set(nudenet_detector.DEFAULT_CLASSES) <= set(nudenet_detector.LABELS)


def test_nudenet_offline_gradient_clean_fixture_flagged(no_network):
    checker = load_nudenet()
    with Image.open(FIXTURE) as image:
        fixture = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)[None]
    clean, positive = checker.check(gradient(320, 320)) + checker.check(fixture)
    assert not clean.flagged and clean.concepts == ()
    assert positive.flagged and positive.concepts == ("BUTTOCKS_EXPOSED",)
    assert positive.scores["BUTTOCKS_EXPOSED"] >= 0.7  # the search stopped at ≥ 0.75; threshold 0.6
    [lenient] = checker.check(fixture, sensitivity=-0.3)  # threshold 0.9
    assert not lenient.flagged
