"""workflows/sld_txt2img_checked: SLD text-to-image → safety checker → SaveImage, through `sld run`.
Flagged images are blacked out before SaveImage sees them, and a checker that cannot load or run
fails the run (exit 1, one line naming the checker, no image written)."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfyui_sld.headless.workflow import ui_to_api
from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS
from comfyui_sld.nodes.context import Runtime, use_runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.nodes.safety import SLDSafetyCheckerLoader
from comfyui_sld.sld_core.safety import load_open_nsfw, open_nsfw
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

NAME = "sld_txt2img_checked"


def tiny_checker_state(**replace):
    """A seeded tiny diffusers StableDiffusionSafetyChecker's weights, as SD's files name them."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(0)
    vision = dict(hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                  image_size=32, patch_size=8)
    model = StableDiffusionSafetyChecker(CLIPConfig(vision_config=vision, projection_dim=32))
    state = {("vision_model." + k if k.startswith("vision_model.") else k): v.contiguous()
             for k, v in model.state_dict().items()}
    return {**state, **replace}, model.config


@pytest.fixture
def run(tmp_path, wf):
    def run(*args, fmt="api"):
        path = wf.root / "api" / f"{NAME}.json" if fmt == "api" else wf.root / f"{NAME}.json"
        (tmp_path / "models").mkdir(exist_ok=True)  # a --models-dir must exist
        return wf.cli("run", path, "--output-dir", tmp_path / "out", "--models-dir", tmp_path / "models",
                      "--device", "cpu", "--quiet", *args)
    return run


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_checked_workflow_runs_and_prints_a_summary(tmp_path, wf, run, fmt):
    code, out, err = run("--set", "6.steps=3", fmt=fmt)
    assert code == 0, err
    assert len(wf.files_under(tmp_path / "out")) == 4
    assert any(line.endswith("/4 images flagged") or "/4 images flagged: blacked out" in line for line in out.splitlines())
    ui = json.loads((wf.root / f"{NAME}.json").read_text())
    assert ui_to_api(ui, HEADLESS_NODE_CLASS_MAPPINGS) == wf.load_api(NAME)


def test_flagged_images_are_blacked_out_before_saving(tmp_path, wf, run):
    """Pick the sensitivity that puts open_nsfw's threshold in the widest gap between the demo batch's
    sorted scores: exactly the images above it are saved black, the others are the unchecked images."""
    code, out, err = run("--set", "8.checker_name=open_nsfw", "--set", "9.action=flag_only")
    assert code == 0 and "0/4 images flagged" in out, err
    originals = [pixels(p) for p in wf.files_under(tmp_path / "out")]
    scores = [r.scores["nsfw"] for r in load_open_nsfw().check(torch.from_numpy(np.stack(originals) / 255.0))]
    ranked = sorted(scores, reverse=True)
    flagged = max(range(1, 4), key=lambda k: ranked[k - 1] - ranked[k])  # how many lie above the widest gap
    high, low = ranked[flagged - 1], ranked[flagged]
    assert high - low > 0.002  # the PNGs are truncated to uint8, the checker rounds: keep clear of both
    sensitivity = open_nsfw.DEFAULT_THRESHOLD - (high + low) / 2

    code, out, err = run("--set", "8.checker_name=open_nsfw", "--set", f"9.sensitivity={sensitivity:.6f}")
    assert code == 0, err
    assert f"{flagged}/4 images flagged: blacked out" in out.splitlines()
    saved = [pixels(p) for p in wf.files_under(tmp_path / "out")[4:]]
    for original, image, score in zip(originals, saved, scores):
        if score >= (high + low) / 2:
            assert not image.any()  # black: the original was never written
        else:
            assert np.array_equal(image, original)

    code, out, err = run("--set", "8.checker_name=open_nsfw", "--set", f"9.sensitivity={sensitivity:.6f}",
                         "--set", "9.action=blur")
    assert code == 0 and f"{flagged}/4 images flagged: blurred" in out.splitlines(), err
    blurred = [pixels(p) for p in wf.files_under(tmp_path / "out")[8:]]
    for original, image, score in zip(originals, blurred, scores):
        assert np.array_equal(image, original) == (score < (high + low) / 2)


def test_demo_checker_blacks_out_the_magenta_images(tmp_path, wf, run):
    """The workflow's own checker (the demo concept checker) on 8 images sampled without SLD: what it
    flags is what the exact pixel classifier calls unsafe, and exactly those are saved black."""
    from comfyui_sld.sld_core.demo_data import classify

    sd = ("--set", "5.batch_size=8", "--set", "6.sld_preset=disabled")
    code, out, err = run(*sd, "--set", "9.action=flag_only")
    assert code == 0, err
    originals = [pixels(p) for p in wf.files_under(tmp_path / "out")]
    unsafe = [classify(image).unsafe for image in originals]
    assert 1 <= sum(unsafe) <= 7  # the prompt names no colour: some seeds draw magenta, most do not
    assert f"{sum(unsafe)}/8 images flagged" in out

    code, out, err = run(*sd)
    assert code == 0 and f"{sum(unsafe)}/8 images flagged: blacked out" in out, err
    for original, image, flagged in zip(originals, [pixels(p) for p in wf.files_under(tmp_path / "out")[8:]], unsafe):
        assert not image.any() if flagged else np.array_equal(image, original)


def test_loader_lists_bundled_nudenet_and_concept_checkers(tmp_path):
    state, config = tiny_checker_state()
    folder = tmp_path / "models" / "safety_checker"
    (folder / "sd15").mkdir(parents=True)
    save_file(state, folder / "sd15" / "model.safetensors")
    (folder / "sd15" / "config.json").write_text(config.to_json_string())
    save_file(state, folder / "tiny.safetensors")
    with use_runtime(Runtime(models=ModelFolders(tmp_path / "models"), device="cpu")):
        names = SLDSafetyCheckerLoader.INPUT_TYPES()["required"]["checker_name"][0]
        assert names == ["open_nsfw", "nudenet", "sld_demo_checker", "demo_pixel", "sd15", "tiny.safetensors"]
        for name in names:
            checker = SLDSafetyCheckerLoader().load_checker(name)[0]
            assert len(checker.check(torch.rand(2, 48, 40, 3))) == 2


def test_concept_checker_file_in_a_workflow(tmp_path, wf, run):
    (tmp_path / "models" / "safety_checker").mkdir(parents=True)
    save_file(tiny_checker_state()[0], tmp_path / "models" / "safety_checker" / "tiny.safetensors")
    code, out, err = run("--set", "6.steps=2", "--set", "8.checker_name=tiny.safetensors")
    assert code == 0, err
    assert len(wf.files_under(tmp_path / "out")) == 4


def missing_weights(folder, monkeypatch):
    (folder / "sc").mkdir()
    (folder / "sc" / "config.json").write_text(tiny_checker_state()[1].to_json_string())
    return "sc"


def truncated_weights(folder, monkeypatch):
    save_file(tiny_checker_state()[0], folder / "sc.safetensors")
    data = (folder / "sc.safetensors").read_bytes()
    (folder / "sc.safetensors").write_bytes(data[: len(data) // 2])
    return "sc.safetensors"


def wrong_shape_weights(folder, monkeypatch):
    save_file(tiny_checker_state(concept_embeds=torch.ones(17, 16))[0], folder / "sc.safetensors")
    return "sc.safetensors"


def tampered_bundled_model(folder, monkeypatch):
    path, sha256 = open_nsfw.bundled_model()
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    (folder / "open-nsfw.onnx").write_bytes(bytes(data))
    monkeypatch.setattr(open_nsfw, "bundled_model", lambda: (folder / "open-nsfw.onnx", sha256))
    return "open_nsfw"


def raises_mid_batch(folder, monkeypatch):
    """The classifier scores the first two images, then fails on the third."""
    real = open_nsfw.OpenNSFWChecker.nsfw_probability
    calls = []

    def flaky(self, pixels):
        calls.append(len(pixels))
        if len(calls) % 4 == 3:  # every run checks 4 images, one per call
            raise RuntimeError("onnxruntime: simulated failure")
        return real(self, pixels)

    monkeypatch.setattr(open_nsfw.OpenNSFWChecker, "batch_size", 1)
    monkeypatch.setattr(open_nsfw.OpenNSFWChecker, "nsfw_probability", flaky)
    return "open_nsfw"


@pytest.mark.parametrize("fault, expected", [
    (missing_weights, "no weights in sc/"),
    (truncated_weights, "not a readable .safetensors"),
    (wrong_shape_weights, "wrong shape concept_embeds"),
    (tampered_bundled_model, "failed the checksum"),
    (raises_mid_batch, "RuntimeError: onnxruntime: simulated failure"),
])
def test_a_checker_that_cannot_run_fails_the_run_and_writes_nothing(tmp_path, wf, run, monkeypatch, fault, expected):
    folder = tmp_path / "models" / "safety_checker"
    folder.mkdir(parents=True)
    name = fault(folder, monkeypatch)
    code, out, err = run("--set", "6.steps=2", "--set", f"8.checker_name={name}", "--json")
    assert code == 1, out
    error = json.loads(out)["error"]
    assert error["type"] == "execution_error"
    message = error["exception_message"]
    assert message.startswith(f"safety checker {name!r} cannot run: ") and expected in message and "\n" not in message
    assert wf.files_under(tmp_path / "out") == []

    code, out, err = run("--set", "6.steps=2", "--set", f"8.checker_name={name}")  # what a person sees
    assert code == 1 and f"safety checker {name!r} cannot run" in err
    assert sum(f"safety checker {name!r}" in line for line in err.splitlines()) == 1
    assert wf.files_under(tmp_path / "out") == []
