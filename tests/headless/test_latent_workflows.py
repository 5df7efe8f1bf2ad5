"""The hires-fix and inpaint workflows (issue 19) run end to end on the demo model and show what they
are for; the latent and image nodes' bad inputs are one-line errors naming node and input, with
nothing written."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_sld.nodes.png import read_text_chunks
from comfyui_sld.sld_core.demo_data import UNSAFE_COLOUR, classify, requested
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def shipped(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def run_ui_file(wf, tmp_path, name):
    """`sld run workflows/NAME.json`: its one PNG (pixels) after checking the graphs it carries."""
    path = WORKFLOWS / f"{name}.json"
    code, out, err = wf.cli("run", path, "--output-dir", tmp_path / "out", "--device", "cpu", "--quiet")
    assert code == 0, err
    [png] = wf.files_under(tmp_path / "out")
    assert png.name == f"{name}_00001_.png" and png.name in out
    chunks = read_text_chunks(png)
    assert chunks["prompt"] == shipped(name) and chunks["workflow"] == json.loads(path.read_text())
    return pixels(png)


def saved_image(executor, prompt):
    result = executor.run(prompt)
    [image] = result.images
    return pixels(executor.runtime.output_dir / image["subfolder"] / image["filename"])


def objects(image):
    """Pixels farther than 60 (RGB distance) from the median of the image's border."""
    image = image.astype(np.float32)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.linalg.norm(image - np.median(border, axis=0), axis=-1) > 60


def test_hires_fix_redraws_the_first_pass_at_1_5x_with_its_layout(wf, tmp_path, session):
    """sld_hires_fix: KSampler at 64x64, LatentUpscaleBy 1.5, SLDKSampler (Medium) at denoise 0.5:
    a 96x96 image of the circle the prompt asks for, without magenta, where the first pass put it."""
    prompt = shipped("sld_hires_fix")
    assert prompt["7"]["inputs"]["scale_by"] == 1.5 and prompt["8"]["inputs"]["denoise"] == 0.5
    hires = run_ui_file(wf, tmp_path, "sld_hires_fix")
    assert hires.shape == (96, 96, 3)
    reading = classify(np.asarray(Image.fromarray(hires).resize((64, 64), Image.Resampling.BILINEAR)))
    assert reading.shows(requested(prompt["2"]["inputs"]["text"])) and reading.unsafe_fraction == 0, reading

    first = {k: v for k, v in prompt.items() if k in ("1", "2", "3", "5", "6")}
    first["20"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}}
    first["21"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "first_pass"}}
    low = saved_image(session, first)
    upscaled = np.asarray(Image.fromarray(low).resize((96, 96), Image.Resampling.NEAREST))
    a, b = objects(upscaled), objects(hires)
    assert (a & b).sum() / (a | b).sum() > 0.5


def test_inpaint_repaints_the_hole_only_and_sld_keeps_the_asked_magenta_out(wf, tmp_path, session):
    """sld_inpaint: the example image with a transparent hole over its square; the prompt asks for a
    magenta square. With SLD disabled the demo model paints one into the hole; the shipped run (Max)
    paints one square without magenta, and outside the hole the picture stays the input's."""
    prompt = shipped("sld_inpaint")
    source = np.asarray(Image.open(WORKFLOWS / "input" / prompt["5"]["inputs"]["image"]))
    kept = source[..., 3] == 255
    assert 0.2 < (~kept).mean() < 0.5  # a hole, not the whole image

    inpainted = run_ui_file(wf, tmp_path, "sld_inpaint")
    reading = classify(inpainted)
    assert reading.colour != UNSAFE_COLOUR and reading.unsafe_fraction == 0, reading
    assert (reading.shape, reading.count) == ("square", 1), reading
    assert objects(inpainted)[~kept].mean() > 0.5  # the square fills the hole
    outside = np.abs(inpainted.astype(int) - source[..., :3].astype(int))[kept]
    assert outside.mean() < 25  # the demo VAE's round trip, nothing redrawn there

    prompt["7"]["inputs"]["sld_preset"] = "disabled"
    plain = classify(saved_image(session, prompt))
    assert plain.colour == UNSAFE_COLOUR and plain.unsafe and plain.shape == "square", plain


def latent_from_batch_past_the_end(prompt):
    prompt["11"] = {"class_type": "LatentFromBatch", "inputs": {"samples": ["6", 0], "batch_index": 3, "length": 1}}
    prompt["7"]["inputs"]["samples"] = ["11", 0]
    return prompt


def set_input(node, name, value):
    def apply(prompt):
        prompt[node]["inputs"][name] = value
        return prompt
    return apply


def mask_of_another_image(prompt):
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "small_hole.png"}}
    prompt["6"]["inputs"]["mask"] = ["10", 1]
    return prompt


# (case, workflow, mutation, exit code (2: refused before running, 1: at run time), node, input, words)
BAD = [
    ("from-batch-past-the-end", "sld_hires_fix", latent_from_batch_past_the_end, 1, "11", "batch_index",
     "past the end of a batch of 1"),
    ("scale-by-zero", "sld_hires_fix", set_input("7", "scale_by", 0), 2, "7", "scale_by", "smaller than min"),
    ("scale-by-to-nothing", "sld_hires_fix", set_input("7", "scale_by", 0.01), 1, "7", "scale_by", "8x8 latent would become 0x0"),
    ("lanczos-on-a-latent", "sld_hires_fix", set_input("7", "upscale_method", "lanczos"), 2, "7", "upscale_method", ""),
    ("inpaint-mask-of-another-size", "sld_inpaint", mask_of_another_image, 1, "6", "mask",
     "the mask is 32x24, the image 64x64"),
]


@pytest.mark.parametrize("case, name, mutate, code, node_id, input_name, words", BAD, ids=[c[0] for c in BAD])
def test_bad_latent_inputs_are_refused_naming_node_and_input(wf, tmp_path, case, name, mutate, code, node_id,
                                                             input_name, words):
    inputs = tmp_path / "input"
    inputs.mkdir()
    for image in (WORKFLOWS / "input").iterdir():
        (inputs / image.name).write_bytes(image.read_bytes())
    Image.new("RGBA", (32, 24), (255, 255, 255, 0)).save(inputs / "small_hole.png")
    prompt = mutate(shipped(name))
    for node in prompt.values():  # one step is enough to get past (or to) the failing node
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = 1
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prompt))
    got, out, err = wf.cli("run", path, "--input-dir", inputs, "--output-dir", tmp_path / "out", "--device", "cpu",
                           "--quiet")
    assert got == code, err
    assert f"node {node_id}" in err and f"'{input_name}'" in err and words in err, err
    assert "Traceback" not in out + err and len(err.strip().splitlines()) <= 2, err
    assert wf.files_under(tmp_path / "out") == []
