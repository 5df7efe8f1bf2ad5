"""workflows/sld_sdxl_txt2img (UI and API format) through `sld run`, on a tiny seeded SDXL single file saved
as sd_xl_base_1.0.safetensors, the name the workflow gives, in a temporary models folder.

The shipped graph is unchanged but for a small size and two steps (--set, as a user would shorten it):
the PNG carries the graph that was run, and running that PNG again gives the same pixels. With SLD on
(Max, which acts from the first step) the image differs from SLD disabled: the safety concept is wired
to the SDXL model. The other shipped workflows run on the embedded demo model
(test_workflows.py); this one needs a file of that name, which the fuzzer's and server's sandboxes lack.
"""
import numpy as np
import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)

from comfyui_sld.nodes.png import read_text_chunks
from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

NAME = "sld_sdxl_txt2img"
CHECKPOINT = "sd_xl_base_1.0.safetensors"
SMALL = ["5.width=64", "5.height=64", "6.steps=2"]  # EmptyLatentImage, SLDKSampler


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from safetensors.torch import save_file

    sds = tiny_families.state_dicts(tiny_families.build("SDXL"))
    ldm = diffusers_to_ldm(sds["unet"], sds["vae"], sds["text_encoder"], "SDXL", sds["text_encoder_2"])
    folder = tmp_path_factory.mktemp("sdxl") / "models"
    (folder / "checkpoints").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(folder / "checkpoints" / CHECKPOINT))
    return folder


def sets(*overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def run(wf, path, models, out, *overrides):
    code, _, err = wf.cli("run", path, "--models-dir", models, "--output-dir", out, "--device", "cpu", "--quiet",
                          *sets(*SMALL, *overrides))
    assert code == 0, err
    [png] = wf.files_under(out)
    return png


def test_the_workflow_names_sdxl_base_at_its_size(wf):
    api = wf.load_api(NAME)
    assert api["1"]["inputs"]["ckpt_name"] == CHECKPOINT
    assert (api["5"]["inputs"]["width"], api["5"]["inputs"]["height"]) == (1024, 1024)
    assert api["6"]["class_type"] == "SLDKSampler" and api["6"]["inputs"]["sld_preset"] == "medium"


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_sdxl_workflow_runs_on_a_file_of_its_checkpoint_name(wf, models, tmp_path, fmt):
    path = wf.root / f"{NAME}.json" if fmt == "ui" else wf.root / "api" / f"{NAME}.json"
    png = run(wf, path, models, tmp_path / "out")
    assert png.name == f"{NAME}_00001_.png"
    assert pixels(png).shape == (16, 16, 3) and pixels(png).std() > 0  # 64² → 8² latent cells; tiny VAE ×2

    chunks = read_text_chunks(png)
    expected = wf.load_api(NAME)
    for override in SMALL:
        (node, field), value = override.split("=")[0].split("."), int(override.split("=")[1])
        expected[node]["inputs"][field] = value
    assert chunks["prompt"] == expected
    assert (chunks.get("workflow") is not None) == (fmt == "ui")
    # The PNG's embedded graph, run again: the same pixels.
    code, _, err = wf.cli("run", png, "--models-dir", models, "--output-dir", tmp_path / "again", "--device", "cpu",
                          "--quiet")
    assert code == 0, err
    [again] = wf.files_under(tmp_path / "again")
    assert np.array_equal(pixels(again), pixels(png))


def test_sld_acts_on_the_sdxl_workflow(wf, models, tmp_path):
    path = wf.root / "api" / f"{NAME}.json"
    on = pixels(run(wf, path, models, tmp_path / "max", "6.sld_preset=max"))
    off = pixels(run(wf, path, models, tmp_path / "off", "6.sld_preset=disabled"))
    assert np.abs(on.astype(int) - off).max() > 0
