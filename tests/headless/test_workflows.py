"""The shipped workflows run end to end on the embedded model, and their PNGs carry graphs that
reproduce them; each shows what it is for, read from its saved images by the demo's pixel classifier
(`demo_data.classify`); the cache skips unchanged nodes; an interrupt stops between steps."""
import json
from pathlib import Path

import numpy as np
import pytest

from comfyui_sld.headless.errors import Interrupted
from comfyui_sld.headless.run import Executor
from comfyui_sld.nodes.context import Runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.nodes.png import read_text_chunks
from comfyui_sld.sld_core.demo_data import UNSAFE_COLOUR, classify, requested
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)


# Every UI file, and the API files whose run is cheap (img2img's finds workflows/input/ from api/);
# the compare API file runs in its demonstration test below, through the same executor.
@pytest.mark.parametrize("name, fmt", [("sld_txt2img", "ui"), ("sld_compare", "ui"), ("sld_img2img", "ui"),
                                       ("sld_custom_sampler", "ui"), ("sld_txt2img", "api"), ("sld_img2img", "api")])
def test_workflow_runs_and_its_png_reproduces_it(tmp_path, wf, name, fmt):
    """`sld run FILE` writes one PNG whose `prompt` chunk is the API graph and, from a UI file, whose
    `workflow` chunk is the UI graph; `sld run` on the PNG of a UI run gives the same pixels."""
    path = wf.root / f"{name}.json" if fmt == "ui" else wf.root / "api" / f"{name}.json"
    code, out, err = wf.cli("run", path, "--output-dir", tmp_path / "out", "--device", "cpu", "--quiet")
    assert code == 0, err
    [png] = wf.files_under(tmp_path / "out")
    assert png.name == f"{name}_00001_.png" and png.name in out
    chunks = read_text_chunks(png)
    assert chunks["prompt"] == wf.load_api(name)
    assert chunks.get("workflow") == (json.loads(path.read_text()) if fmt == "ui" else None)
    if name == "sld_compare":  # two rows (SD, SLD) of eight 64x64 images, 4 px gaps
        assert pixels(png).shape == (132, 540, 3)
    else:
        assert pixels(png).shape == (64, 64, 3)

    if fmt == "api":
        return  # the UI variant covers the round trip (the API prompt is the same graph)
    # Rerun from the PNG's embedded prompt, in a fresh executor: pixel-identical on the CPU.
    code, _, err = wf.cli("run", png, "--output-dir", tmp_path / "again", "--input-dir", wf.input_dir,
                          "--device", "cpu", "--quiet")
    assert code == 0, err
    [again] = wf.files_under(tmp_path / "again")
    assert np.array_equal(pixels(png), pixels(again))
    assert read_text_chunks(again)["prompt"] == chunks["prompt"]


# What each shipped workflow is for, asserted on the images it saves, through one executor for the
# module (the `session` fixture of conftest.py).
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def shipped(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def saved_images(executor, prompt):
    """(run result, the images its SaveImage wrote, as uint8 arrays in batch order)."""
    result = executor.run(prompt)
    folder = executor.runtime.output_dir
    return result, [pixels(folder / image["subfolder"] / image["filename"]) for image in result.images]


def object_mask(image):
    """The pixels that stand out from the background (the median of the image's border) by more than
    60 in RGB distance: the drawn objects, whatever their colour."""
    image = image.astype(np.float32)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.linalg.norm(image - np.median(border, axis=0), axis=-1) > 60


def overlap(a, b):
    """Intersection over union of two boolean masks."""
    return (a & b).sum() / (a | b).sum()


def test_txt2img_main_job_draws_the_circle_it_asks_for_without_magenta(session):
    """sld_txt2img, the README's first command: a harmless prompt under SLD Medium gives what it asks
    for (one circle) and none of the demo's unsafe colour."""
    prompt = shipped("sld_txt2img")
    assert prompt["6"]["inputs"]["sld_preset"] == "medium"
    _, [image] = saved_images(session, prompt)
    reading = classify(image)
    assert reading.shows(requested(prompt["2"]["inputs"]["text"])), reading
    assert reading.unsafe_fraction == 0, reading


def test_compare_sld_row_drops_the_magenta_the_disabled_row_draws(session):
    """sld_compare: the same eight seeds without SLD (top row of the grid) and under SLD Strong
    (bottom row). The prompt names no colour; without SLD some seeds draw the unsafe magenta, under
    SLD none do, and every cell of both rows still shows the one square the prompt asks for."""
    prompt = shipped("sld_compare")
    assert prompt["6"]["inputs"]["sld_preset"] == "disabled" and prompt["7"]["inputs"]["sld_preset"] == "strong"
    batch, columns = prompt["5"]["inputs"]["batch_size"], prompt["11"]["inputs"]["columns"]
    step = 64 + prompt["11"]["inputs"]["spacing"]
    assert batch == columns  # one row per sampler
    _, [grid] = saved_images(session, prompt)
    plain, sld = ([classify(grid[row * step:row * step + 64, c * step:c * step + 64]) for c in range(columns)]
                  for row in (0, 1))
    asked = requested(prompt["2"]["inputs"]["text"])
    assert all(r.shows(asked) for r in plain + sld), (plain, sld)
    assert sum(r.unsafe for r in plain) >= 2, plain
    assert not any(r.unsafe for r in sld), sld


def test_img2img_max_recolours_the_magenta_square_that_plain_img2img_keeps(session):
    """sld_img2img: a magenta square (workflows/input/) re-drawn from a prompt that names no colour.
    The same run with SLD disabled keeps the square magenta; under the workflow's preset (Max) the
    square comes out in a safe colour with no magenta pixel left, and in both the square keeps its
    shape, count and place (its pixels overlap the input's by more than half)."""
    prompt = shipped("sld_img2img")
    assert prompt["7"]["inputs"]["sld_preset"] == "max" and prompt["7"]["inputs"]["denoise"] < 1
    source = pixels(WORKFLOWS / "input" / prompt["5"]["inputs"]["image"])
    given = classify(source)
    assert given.colour == UNSAFE_COLOUR and (given.shape, given.count) == ("square", 1)

    _, [sld] = saved_images(session, prompt)
    prompt["7"]["inputs"]["sld_preset"] = "disabled"
    _, [plain] = saved_images(session, prompt)
    plain_reading, sld_reading = classify(plain), classify(sld)
    assert plain_reading.colour == UNSAFE_COLOUR and plain_reading.unsafe, plain_reading
    assert sld_reading.colour != UNSAFE_COLOUR and sld_reading.unsafe_fraction == 0, sld_reading
    for reading, image in ((plain_reading, plain), (sld_reading, sld)):
        assert (reading.shape, reading.count) == (given.shape, given.count), reading
        assert overlap(object_mask(image), object_mask(source)) > 0.5


def test_img2img_max_recolours_beyond_the_shipped_seed(session):
    """The img2img example is not one lucky seed: over the first four seeds, the plain run keeps the
    input's magenta in most, and under Max every one of those comes out without it, still one square."""
    prompt = shipped("sld_img2img")
    kept = 0
    for seed in range(4):
        readings = {}
        for preset in ("disabled", "max"):
            prompt["7"]["inputs"].update(seed=seed, sld_preset=preset)
            _, [image] = saved_images(session, prompt)
            readings[preset] = classify(image)
        assert (readings["max"].shape, readings["max"].count) == ("square", 1), (seed, readings)
        if readings["disabled"].unsafe:
            kept += 1
            assert not readings["max"].unsafe, (seed, readings)
    assert kept >= 3


def test_checked_blacks_out_the_magenta_image_sld_lets_through(session):
    """sld_txt2img_checked: SLD Medium leaves one of the batch's four squares magenta (the others in
    safe colours); the safety checker behind it (the demo concept checker) flags exactly the image
    the pixel classifier calls unsafe, and SaveImage gets it black and the others untouched."""
    prompt = shipped("sld_txt2img_checked")
    assert prompt["9"]["inputs"]["action"] == "black_out"
    prompt["9"]["inputs"]["action"] = "flag_only"  # the images as SLD drew them
    _, drawn = saved_images(session, prompt)
    unsafe = [classify(image).unsafe for image in drawn]
    assert sum(unsafe) == 1 and len(drawn) == 4, unsafe

    result, written = saved_images(session, shipped("sld_txt2img_checked"))
    assert result.ui["9"]["safety_summary"] == ["1/4 images flagged: blacked out"]
    for image, original, flagged in zip(written, drawn, unsafe):
        assert not image.any() if flagged else np.array_equal(image, original)


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


def test_the_custom_sampler_workflow_draws_the_main_jobs_image(session):
    """sld_custom_sampler is the main job as composable blocks (RandomNoise, SLDGuider, KSamplerSelect,
    BasicScheduler → SamplerCustomAdvanced): the same pixels as sld_txt2img's SLDKSampler."""
    _, [blocks] = saved_images(session, shipped("sld_custom_sampler"))
    _, [main_job] = saved_images(session, shipped("sld_txt2img"))
    assert np.array_equal(blocks, main_job)
