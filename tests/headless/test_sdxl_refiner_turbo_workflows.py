"""workflows/sld_sdxl_base_refiner and sld_sdxl_turbo (UI and API format) through `sld run`, on tiny seeded
SDXL base and refiner files saved under the names the workflows give (SDXL-Turbo has SDXL's
architecture, so the base's file serves as the turbo's), small sizes set with --set as a user would.

Base + refiner: in the UI file a primitive node drives both samplers' steps (and another the step where
the refiner takes over), and the API file is that graph as the frontend's "Save (API)" writes it; the
PNG carries the graph run, and `--set` on a primitive sets every widget it drives. The hand-over matters: moving it changes the image. Turbo: SLD acts at the
workflow's cfg 1.5 (Max against disabled), and at cfg 1 it cannot (no unconditional pass), which is
why the workflow is not at SDXL-Turbo's usual cfg 1.
"""
import numpy as np
import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)

from comfyui_sld.nodes.png import read_text_chunks
from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

REFINER = "sld_sdxl_base_refiner"
TURBO = "sld_sdxl_turbo"
FILES = {"SDXL": ("sd_xl_base_1.0.safetensors", "sd_xl_turbo_1.0_fp16.safetensors"),
         "SDXL refiner": ("sd_xl_refiner_1.0.safetensors",)}
# EmptyLatentImage; both samplers' steps and the hand-over step: in the API file on each sampler, in the
# UI file on the primitive nodes that drive them.
REFINER_SMALL = ["5.width=64", "5.height=64", "8.steps=3", "12.steps=3", "8.end_at_step=2", "12.start_at_step=2"]
REFINER_SMALL_UI = ["5.width=64", "5.height=64", "6.value=3", "7.value=2"]
TURBO_SMALL = ["5.width=64", "5.height=64"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("sdxl_pair") / "models"
    (folder / "checkpoints").mkdir(parents=True)
    for family, names in FILES.items():
        sds = tiny_families.state_dicts(tiny_families.build(family))
        ldm = diffusers_to_ldm(sds["unet"], sds["vae"], sds.get("text_encoder"), family, sds["text_encoder_2"])
        for name in names:
            save_file({k: v.contiguous() for k, v in ldm.items()}, str(folder / "checkpoints" / name))
    return folder


def run(wf, path, models, out, *overrides):
    sets = [arg for o in overrides for arg in ("--set", o)]
    code, _, err = wf.cli("run", path, "--models-dir", models, "--output-dir", out, "--device", "cpu", "--quiet", *sets)
    assert code == 0, err
    [png] = wf.files_under(out)
    return png


def with_overrides(api, overrides):
    for override in overrides:
        target, value = override.split("=")
        node, field = target.split(".")
        api[node]["inputs"][field] = float(value) if "." in value else int(value)
    return api


def test_a_primitive_drives_both_samplers_steps(wf):
    ui = json_file(wf.root / f"{REFINER}.json")
    nodes = {n["id"]: n for n in ui["nodes"]}
    targets = {(link[3], nodes[link[3]]["inputs"][link[4]]["name"]) for link in ui["links"]
               if nodes[link[1]]["type"] == "PrimitiveNode"}
    assert targets == {(8, "steps"), (12, "steps"), (8, "end_at_step"), (12, "start_at_step")}
    for node_id, name in targets:
        assert nodes[node_id]["inputs"][[s["name"] for s in nodes[node_id]["inputs"]].index(name)]["widget"] == {"name": name}
    api = wf.load_api(REFINER)
    assert "6" not in api and "7" not in api  # primitives are not part of the API graph
    assert api["8"]["class_type"] == "SLDKSamplerAdvanced" and api["12"]["class_type"] == "KSamplerAdvanced"
    assert api["8"]["inputs"]["steps"] == api["12"]["inputs"]["steps"] == 25
    assert api["8"]["inputs"]["end_at_step"] == api["12"]["inputs"]["start_at_step"] == 20
    assert api["12"]["inputs"]["add_noise"] == "disable" and api["8"]["inputs"]["return_with_leftover_noise"] == "enable"
    assert (api["1"]["inputs"]["ckpt_name"], api["9"]["inputs"]["ckpt_name"]) == (FILES["SDXL"][0], FILES["SDXL refiner"][0])


def json_file(path):
    import json

    return json.loads(path.read_text())


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_base_refiner_runs_on_files_of_its_checkpoint_names(wf, models, tmp_path, fmt):
    path = wf.root / f"{REFINER}.json" if fmt == "ui" else wf.root / "api" / f"{REFINER}.json"
    png = run(wf, path, models, tmp_path / "out", *(REFINER_SMALL_UI if fmt == "ui" else REFINER_SMALL))
    assert png.name == f"{REFINER}_00001_.png"
    assert pixels(png).shape == (16, 16, 3) and pixels(png).std() > 0
    chunks = read_text_chunks(png)
    assert chunks["prompt"] == with_overrides(wf.load_api(REFINER), REFINER_SMALL)
    assert (chunks.get("workflow") is not None) == (fmt == "ui")
    if fmt == "api":
        return
    # The saved workflow holds the new values on the primitives (ComfyUI copies them into the samplers).
    primitives = {n["id"]: n["widgets_values"][0] for n in chunks["workflow"]["nodes"] if n["type"] == "PrimitiveNode"}
    assert primitives == {6: 3, 7: 2}
    # The refiner's share matters: handing over one step later gives another image.
    later = run(wf, path, models, tmp_path / "later", *REFINER_SMALL_UI, "7.value=3")
    assert not np.array_equal(pixels(later), pixels(png))


def test_a_widget_a_primitive_drives_is_set_on_the_primitive(wf, tmp_path):
    code, _, err = wf.cli("validate", wf.root / f"{REFINER}.json", "--set", "12.steps=3")
    assert code != 0 and "node 12" in err and "primitive node 6 ('steps')" in err and "--set 6.value=" in err
    code, _, err = wf.cli("validate", wf.root / f"{REFINER}.json", "--set", "6.steps=3")
    assert code != 0 and "one widget, 'value'" in err


@pytest.mark.parametrize("fmt", ["ui", "api"])
def test_turbo_runs_one_step_with_sld_acting(wf, models, tmp_path, fmt):
    path = wf.root / f"{TURBO}.json" if fmt == "ui" else wf.root / "api" / f"{TURBO}.json"
    api = wf.load_api(TURBO)
    assert api["1"]["inputs"]["ckpt_name"] == FILES["SDXL"][1] and api["9"]["inputs"]["steps"] == 1
    assert api["7"]["inputs"]["cfg"] == 1.5 and api["7"]["inputs"]["sld_preset"] == "max"
    png = run(wf, path, models, tmp_path / "out", *TURBO_SMALL)
    assert read_text_chunks(png)["prompt"] == with_overrides(api, TURBO_SMALL)
    if fmt == "api":
        return
    disabled = run(wf, path, models, tmp_path / "disabled", *TURBO_SMALL, "7.sld_preset=disabled")
    assert not np.array_equal(pixels(png), pixels(disabled))  # SLD acts on the only step
    # At cfg 1 there is no unconditional pass and SLD cannot act: Max is then plain guidance, exactly.
    at_one = [run(wf, path, models, tmp_path / f"cfg1_{preset}", *TURBO_SMALL, "7.cfg=1.0", f"7.sld_preset={preset}")
              for preset in ("max", "disabled")]
    assert np.array_equal(pixels(at_one[0]), pixels(at_one[1]))
