"""The shipped workflows run end to end on the embedded model, and their PNGs carry graphs that
reproduce them; the cache skips unchanged nodes; an interrupt stops between steps."""
import json

import numpy as np
import pytest
from PIL import Image

from comfyui_sld.headless.errors import Interrupted
from comfyui_sld.headless.run import Executor
from comfyui_sld.headless.workflow import ui_to_api
from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS
from comfyui_sld.nodes.context import Runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.nodes.png import read_text_chunks


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()


@pytest.mark.parametrize("name", ["sld_txt2img", "sld_compare", "sld_img2img"])
@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_workflow_runs_and_its_png_reproduces_it(tmp_path, wf, name, fmt):
    path = wf.root / f"{name}.json" if fmt == "ui" else wf.root / "api" / f"{name}.json"
    code, out, err = wf.cli("run", path, "--output-dir", tmp_path / "out", "--device", "cpu", "--quiet")
    assert code == 0, err
    [png] = wf.files_under(tmp_path / "out")
    assert png.name == f"{name}_00001_.png" and str(png.relative_to(tmp_path)) in out.replace("\\", "/") or png.name in out
    chunks = read_text_chunks(png)
    assert chunks["prompt"] == wf.load_api(name) | {k: chunks["prompt"][k] for k in chunks["prompt"]}
    assert ("workflow" in chunks) == (fmt == "ui")
    if name == "sld_compare":  # two rows (SD, SLD) of eight 64x64 images, 4 px gaps
        assert pixels(png).shape == (132, 540, 3)
    else:
        assert pixels(png).shape == (64, 64, 3)

    if fmt == "api":
        return  # the UI variant below covers the round trip (the API prompt is the same graph)
    # Rerun from the PNG's embedded prompt, in a fresh executor: pixel-identical on the CPU.
    code, _, err = wf.cli("run", png, "--output-dir", tmp_path / "again", "--input-dir", wf.input_dir,
                          "--device", "cpu", "--quiet")
    assert code == 0, err
    [again] = wf.files_under(tmp_path / "again")
    assert np.array_equal(pixels(png), pixels(again))
    assert read_text_chunks(again)["prompt"] == chunks["prompt"]


@pytest.mark.parametrize("name", ["sld_txt2img", "sld_compare", "sld_img2img"])
def test_api_files_are_the_ui_files_converted(wf, name):
    ui = json.loads((wf.root / f"{name}.json").read_text())
    assert ui_to_api(ui, HEADLESS_NODE_CLASS_MAPPINGS) == wf.load_api(name)


def test_compare_grid_differs_between_disabled_and_max(tmp_path, wf):
    code, _, err = wf.cli("run", wf.root / "api" / "sld_compare.json", "--output-dir", tmp_path, "--quiet")
    assert code == 0, err
    grid = pixels(wf.files_under(tmp_path)[0])
    sd, sld = grid[:64], grid[68:]
    assert not np.array_equal(sd, sld)


def make_executor(tmp_path, wf, **kwargs):
    runtime = Runtime(models=ModelFolders(tmp_path / "models"), input_dir=wf.input_dir,
                      output_dir=tmp_path / "out", device="cpu")
    return Executor(runtime, progress=False, **kwargs)


def test_cache_reuses_loader_and_text_encoders(tmp_path, wf):
    executor = make_executor(tmp_path, wf)
    prompt = wf.load_api("sld_txt2img")
    prompt["6"]["inputs"]["steps"] = 3
    first = executor.run(prompt)
    assert sorted(first.executed) == ["1", "2", "3", "4", "5", "6", "7", "8"] and first.cached == []

    same = executor.run(prompt)  # same seed: only the output node runs again (it writes a new file)
    assert same.executed == ["8"] and sorted(same.cached) == ["1", "2", "3", "4", "5", "6", "7"]

    prompt["6"]["inputs"]["seed"] = 7
    reseeded = executor.run(prompt)
    assert sorted(reseeded.executed) == ["6", "7", "8"]
    assert sorted(reseeded.cached) == ["1", "2", "3", "4", "5"]  # checkpoint loaded once, text encoded once

    prompt["2"]["inputs"]["text"] = "a dog"
    new_text = executor.run(prompt)
    assert sorted(new_text.executed) == ["2", "6", "7", "8"]
    assert len(wf.files_under(tmp_path / "out")) == 4


def test_interrupt_stops_between_steps_without_files(tmp_path, wf):
    class InterruptAtStep2(Executor):
        def _on_step(self, value, total):
            if value == 2:
                self.interrupt.set()
            super()._on_step(value, total)

    runtime = Runtime(models=ModelFolders(tmp_path / "models"), input_dir=wf.input_dir,
                      output_dir=tmp_path / "out", device="cpu")
    executor = InterruptAtStep2(runtime, progress=False)
    prompt = wf.load_api("sld_txt2img")
    with pytest.raises(Interrupted) as info:
        executor.run(prompt)
    assert (info.value.node_id, info.value.step, info.value.total) == ("6", 2, prompt["6"]["inputs"]["steps"])
    assert wf.files_under(tmp_path / "out") == []


def test_set_override_reaches_prompt_and_ui_metadata(tmp_path, wf):
    code, _, err = wf.cli("run", wf.root / "sld_txt2img.json", "--set", "6.seed=123", "--set", "6.steps=3",
                          "--set", "2.text=a red apple", "--output-dir", tmp_path, "--quiet")
    assert code == 0, err
    chunks = read_text_chunks(wf.files_under(tmp_path)[0])
    assert chunks["prompt"]["6"]["inputs"]["seed"] == 123 and chunks["prompt"]["2"]["inputs"]["text"] == "a red apple"
    sampler = next(n for n in chunks["workflow"]["nodes"] if n["id"] == 6)
    assert sampler["widgets_values"][:3] == [123, "fixed", 3]


def test_json_output_and_validate(tmp_path, wf):
    code, out, _ = wf.cli("validate", wf.root / "sld_compare.json", "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "outputs": ["12"], "nodes": 12}
    code, out, _ = wf.cli("run", wf.root / "api" / "sld_txt2img.json", "--set", "6.steps=2",
                          "--output-dir", tmp_path, "--json")
    document = json.loads(out)
    assert code == 0 and document["ok"] and document["images"][0]["filename"] == "sld_txt2img_00001_.png"


def test_nodes_command(wf):
    code, out, _ = wf.cli("nodes")
    assert code == 0 and "SLDKSampler" in out and "KSampler" in out
    code, out, _ = wf.cli("nodes", "SLDKSampler")
    assert code == 0 and "sld_preset" in out and "min 1, max 10000" in out
    code, _, err = wf.cli("nodes", "Nope")
    assert code == 2 and "Nope" in err
