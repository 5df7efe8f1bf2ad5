"""UI→API conversion as the ComfyUI frontend's graphToPrompt does it, on small literal graphs; the
shipped workflows in both formats are what scripts/make_workflows.py writes."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_sld.headless.errors import WorkflowError
from comfyui_sld.headless.plan import execution_order
from comfyui_sld.headless.workflow import parse_workflow, ui_to_api, widget_slots
from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS as REGISTRY

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
SHIPPED = sorted(path.stem for path in WORKFLOWS.glob("*.json"))


def node(id, type, widgets=None, inputs=(), mode=0, outputs=()):
    return {"id": id, "type": type, "mode": mode, "widgets_values": widgets,
            "inputs": [{"name": n, "type": t, "link": l} for n, t, l in inputs],
            "outputs": [{"name": t, "type": t, "links": [], "slot_index": i} for i, t in enumerate(outputs)]}


def ui_graph():
    """Loader → text → (reroute) → KSampler, a muted and a bypassed node, a primitive and a note."""
    return {
        "nodes": [
            node(1, "CheckpointLoaderSimple", ["sld_demo.safetensors"], outputs=("MODEL", "CLIP", "VAE")),
            node(2, "CLIPTextEncode", ["a cat"], [("clip", "CLIP", 1)], outputs=("CONDITIONING",)),
            node(3, "Reroute", None, [("", "*", 2)], outputs=("CONDITIONING",)),
            node(4, "EmptyLatentImage", [64, 64, 1], outputs=("LATENT",)),
            node(5, "KSampler", [7, "randomize", 4, 6.5, "euler", "karras", 1.0],
                 [("model", "MODEL", 3), ("positive", "CONDITIONING", 4), ("negative", "CONDITIONING", 5),
                  ("latent_image", "LATENT", 6), ("seed", "INT", 9)], outputs=("LATENT",)),
            node(6, "VAEDecode", None, [("samples", "LATENT", 7), ("vae", "VAE", 8)], mode=4, outputs=("IMAGE",)),
            node(7, "PreviewImage", None, [("images", "IMAGE", 10)]),
            node(8, "SaveImage", ["muted"], [("images", "IMAGE", 11)], mode=2),
            node(9, "PrimitiveNode", [7, "fixed"], outputs=("INT",)),
            node(10, "Note", ["just a note"]),
            node(11, "LoadImage", ["sld_example.png", "image"], outputs=("IMAGE", "MASK")),
            node(12, "VAEEncode", None, [("pixels", "IMAGE", 12), ("vae", "VAE", 13)], outputs=("LATENT",)),
        ],
        "links": [
            [1, 1, 1, 2, 0, "CLIP"], [2, 2, 0, 3, 0, "CONDITIONING"], [3, 1, 0, 5, 0, "MODEL"],
            [4, 3, 0, 5, 1, "CONDITIONING"], [5, 2, 0, 5, 2, "CONDITIONING"], [6, 4, 0, 5, 3, "LATENT"],
            [7, 5, 0, 6, 0, "LATENT"], [8, 1, 2, 6, 1, "VAE"], [9, 9, 0, 5, 4, "INT"],
            [10, 6, 0, 7, 0, "IMAGE"], [11, 6, 0, 8, 0, "IMAGE"], [12, 11, 0, 12, 0, "IMAGE"], [13, 1, 2, 12, 1, "VAE"],
        ],
        "version": 0.4,
    }


def test_ui_to_api():
    api = ui_to_api(ui_graph(), REGISTRY)
    assert sorted(api, key=int) == ["1", "2", "4", "5", "7", "11", "12"]  # no reroute/muted/bypassed/primitive/note
    assert api["5"]["inputs"] == {
        "seed": 7, "steps": 4, "cfg": 6.5, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0,
        "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["4", 0],
    }  # the control value is skipped; the reroute resolves to its source; the primitive keeps the widget
    # A bypassed node passes on its input of the output's type; VAEDecode has no IMAGE input, so the
    # link is dropped (validation then reports PreviewImage's missing input).
    assert api["7"]["inputs"] == {}
    assert api["11"]["inputs"] == {"image": "sld_example.png"}  # the upload widget's value is dropped


def test_bypass_passes_the_input_of_the_same_type():
    ui = ui_graph()
    ui["nodes"][5]["outputs"][0]["type"] = "LATENT"  # a LATENT -> LATENT node bypassed
    assert ui_to_api(ui, REGISTRY)["7"]["inputs"] == {"images": ["5", 0]}


def test_schema_1_links_and_old_seed_control():
    ui = ui_graph()
    ui["links"] = [dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], l)) for l in ui["links"]]
    ui["nodes"][4]["widgets_values"] = [7, 4, 6.5, "euler", "karras", 1.0]  # no control value at all
    assert ui_to_api(ui, REGISTRY)["5"]["inputs"]["steps"] == 4
    assert widget_slots(REGISTRY["KSampler"], [7, True, 4, 6.5, "euler", "karras", 1.0])["steps"] == 2


def test_a_subgraph_definition_without_nodes_is_refused_naming_its_instance():
    ui = ui_graph()
    ui["definitions"] = {"subgraphs": [{"id": "a1b2"}]}
    ui["nodes"].append(node(20, "a1b2", []))
    with pytest.raises(WorkflowError) as info:
        ui_to_api(ui, REGISTRY)
    assert info.value.node_id == "20" and "subgraph" in info.value.message


def test_formats_are_detected():
    api = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64}}, "2": {"class_type": "X", "inputs": {"a": [1, 0]}}}
    assert parse_workflow(api, REGISTRY).prompt["2"]["inputs"]["a"] == ["1", 0]  # ids become strings
    body = {"prompt": api, "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}}}
    assert parse_workflow(body, REGISTRY).ui == {"nodes": []}
    assert parse_workflow(ui_graph(), REGISTRY).ui is not None


def test_execution_order_is_dependencies_first_and_only_what_outputs_need():
    prompt = {
        "1": {"class_type": "A", "inputs": {}},
        "2": {"class_type": "B", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Out", "inputs": {"x": ["2", 0], "y": ["5", 0]}},
        "4": {"class_type": "Dangling", "inputs": {"x": ["1", 0]}},
        "5": {"class_type": "C", "inputs": {}},
        "10": {"class_type": "Out", "inputs": {"x": ["1", 0]}},
    }
    assert execution_order(prompt, ["10", "3"]) == ["1", "2", "5", "3", "10"]


def files_under(folder):
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


def test_the_shipped_workflows_are_what_make_workflows_writes(tmp_path):
    """Every file under workflows/ (UI, API, the img2img input) is what scripts/make_workflows.py
    writes, and there is no other: change the script and re-run it, never one format by hand."""
    spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(["--out", str(tmp_path)])
    assert files_under(tmp_path) == files_under(WORKFLOWS)
    for name in files_under(WORKFLOWS):
        if name.suffix == ".json":
            assert (tmp_path / name).read_text() == (WORKFLOWS / name).read_text(), name
        else:  # compare pixels: PNG bytes may differ between Pillow/zlib versions
            with Image.open(tmp_path / name) as written, Image.open(WORKFLOWS / name) as shipped:
                assert np.array_equal(np.asarray(written), np.asarray(shipped)), name


@pytest.mark.parametrize("name", SHIPPED)
def test_each_api_file_is_its_ui_file_converted(name):
    """workflows/api/NAME.json is exactly the conversion of workflows/NAME.json, for every UI file."""
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert ui_to_api(ui, REGISTRY) == json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
