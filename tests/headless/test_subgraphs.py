"""Subgraphs in UI workflows (headless/subgraphs.py): expanded as the frontend's graphToPrompt does,
checked against the flattened twin they were built from (workflows/sld_txt2img.json: its SLDKSampler
and VAEDecode wrapped in the subgraph 'Sample and decode', that inside 'Generate' with a reroute and a
muted preview, the seed promoted to the outer instance); malformed subgraphs refused naming the node
the user sees."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from comfyui_sld.headless.errors import WorkflowError
from comfyui_sld.headless.workflow import parse_workflow, ui_to_api
from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS as REGISTRY
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

ROOT = Path(__file__).resolve().parents[2]
NESTED = ROOT / "tests" / "fixtures" / "subgraphs" / "sld_txt2img_nested.json"
TWIN_UI, TWIN_API = ROOT / "workflows" / "sld_txt2img.json", ROOT / "workflows" / "api" / "sld_txt2img.json"
OUTER, INNER = "6f1c2a4e-0b7d-4c39-9a51-3e8d2f7b1c05", "b2e94d17-5a3c-4f80-8c6e-91d0a7f4e362"
SAMPLER, DECODE = "10:7:3", "10:7:4"  # the twin's nodes 6 and 7, by their execution ids


def nested():
    return json.loads(NESTED.read_text())


def definition(ui, subgraph_id):
    return next(s for s in ui["definitions"]["subgraphs"] if s["id"] == subgraph_id)


def inner_node(ui, subgraph_id, node_id):
    return next(n for n in definition(ui, subgraph_id)["nodes"] if n["id"] == node_id)


def renamed(prompt, names):
    """The prompt with node ids (and the links naming them) renamed by `names`."""
    out = {}
    for node_id, node in prompt.items():
        inputs = {k: [names.get(v[0], v[0]), v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        out[names.get(node_id, node_id)] = dict(node, inputs=inputs)
    return out


def invalid(ui):
    with pytest.raises(WorkflowError) as info:
        ui_to_api(ui, REGISTRY)
    return info.value


# --- expansion -----------------------------------------------------------------------------------------

def test_nested_subgraph_gives_the_flattened_twins_prompt():
    """Execution ids 'outer:inner:node', links into the instances reach the inner targets, the outputs
    come from the inner origins, the reroute is followed, the muted inner preview is left out, and the
    seed is the outer instance's promoted value (42), not the inner instance's (123) or the sampler's (7)."""
    prompt = ui_to_api(nested(), REGISTRY)
    assert sorted(prompt) == sorted(["1", "2", "3", "4", "5", "8", SAMPLER, DECODE])
    assert renamed(prompt, {SAMPLER: "6", DECODE: "7"}) == json.loads(TWIN_API.read_text())


def test_an_inner_instance_output_used_inside_its_parent():
    ui = nested()
    inner_node(ui, OUTER, 12)["mode"] = 0  # the preview inside 'Generate', fed by the inner instance's output
    assert ui_to_api(ui, REGISTRY)["10:12"] == {"class_type": "PreviewImage", "inputs": {"images": [DECODE, 0]}}


def test_promoted_values_count_only_when_the_instance_stores_them_all():
    ui = nested()
    ui["nodes"][5]["widgets_values"] = []  # the outer instance stores no promoted value: the inner one's stands
    assert ui_to_api(ui, REGISTRY)[SAMPLER]["inputs"]["seed"] == 123
    inner_node(ui, OUTER, 7)["widgets_values"] = [123, 5]  # not one per promoted widget: the sampler's own value
    assert ui_to_api(ui, REGISTRY)[SAMPLER]["inputs"]["seed"] == 7


def test_proxy_widgets_form_reads_the_values_in_the_inner_nodes():
    """Newer frontends list promoted widgets in properties.proxyWidgets and store no instance values."""
    ui = nested()
    for instance in (ui["nodes"][5], inner_node(ui, OUTER, 7)):
        instance["widgets_values"] = []
        instance["properties"] = {"proxyWidgets": [["7" if instance is ui["nodes"][5] else "3", "seed"]]}
    inner_node(ui, INNER, 3)["widgets_values"][2] = 9  # steps, not promoted
    inputs = ui_to_api(ui, REGISTRY)[SAMPLER]["inputs"]
    assert (inputs["seed"], inputs["steps"]) == (7, 9)


def test_a_connected_instance_input_wins_over_its_promoted_widget():
    ui = nested()
    ui["nodes"].append({"id": 20, "type": "PrimitiveNode", "mode": 0, "inputs": [], "widgets_values": [5, "fixed"],
                        "outputs": [{"name": "INT", "type": "INT", "links": [20]}]})
    ui["nodes"].append({"id": 21, "type": "EmptyLatentImage", "mode": 0, "inputs": [], "widgets_values": [64, 64, 1],
                        "outputs": [{"name": "LATENT", "type": "LATENT", "links": [21]}]})
    ui["links"] += [[21, 21, 0, 10, 3, "LATENT"]]
    ui["nodes"][5]["inputs"][3]["link"] = 21  # the latent now comes from node 21
    assert ui_to_api(ui, REGISTRY)[SAMPLER]["inputs"]["latent_image"] == ["21", 0]


def test_muted_and_bypassed_instances():
    ui = nested()
    ui["nodes"][5]["mode"] = 2  # muted: nothing inside runs, and its consumer loses the input
    prompt = ui_to_api(ui, REGISTRY)
    assert SAMPLER not in prompt and "images" not in prompt["8"]["inputs"]
    inner_node(ui, OUTER, 7)["mode"] = 4
    ui["nodes"][5]["mode"] = 0  # the inner instance bypassed: its IMAGE output has no IMAGE input to pass
    prompt = ui_to_api(ui, REGISTRY)
    assert SAMPLER not in prompt and "images" not in prompt["8"]["inputs"]
    inner_node(ui, OUTER, 7)["mode"] = 0
    inner_node(ui, INNER, 4)["mode"] = 4  # the decoder bypassed inside: its LATENT input is not an IMAGE either
    assert DECODE not in ui_to_api(ui, REGISTRY)


def test_two_instances_of_one_subgraph_get_their_own_ids():
    ui = nested()
    second = copy.deepcopy(ui["nodes"][5])
    second.update(id=11, widgets_values=[43])
    second["outputs"][0]["links"] = [12]
    ui["nodes"].append(second)
    ui["nodes"].append({"id": 12, "type": "PreviewImage", "mode": 0,
                        "inputs": [{"name": "images", "type": "IMAGE", "link": 12}],
                        "outputs": []})
    ui["links"].append([12, 11, 0, 12, 0, "IMAGE"])
    prompt = ui_to_api(ui, REGISTRY)
    assert (prompt["10:7:3"]["inputs"]["seed"], prompt["11:7:3"]["inputs"]["seed"]) == (42, 43)
    assert prompt["12"]["inputs"]["images"] == ["11:7:4", 0]


def test_the_workflow_metadata_stays_the_saved_file():
    ui = nested()
    workflow = parse_workflow(ui, REGISTRY)
    assert workflow.ui == nested() and SAMPLER in workflow.prompt


# --- malformed subgraphs: one WorkflowError naming the instance on the canvas ----------------------

def test_missing_definition():
    ui = nested()
    ui["definitions"]["subgraphs"] = [definition(ui, INNER)]
    error = invalid(ui)
    assert error.node_id == "10" and OUTER in error.message and "no subgraph with that id" in error.message


def test_missing_nested_definition_names_the_outer_instance():
    ui = nested()
    ui["definitions"]["subgraphs"] = [definition(ui, OUTER)]
    error = invalid(ui)
    assert error.node_id == "10" and error.message.startswith("subgraph 'Generate', inner node 10:7: ")


def test_dangling_link_inside():
    ui = nested()
    inner_node(ui, INNER, 4)["inputs"][0]["link"] = 99
    error = invalid(ui)
    assert error.node_id == "10"
    assert error.message == ("subgraph 'Generate' › 'Sample and decode', inner node 10:7:4, input 'samples': "
                             "its link 99 is not in the subgraph's links (a dangling link)")


def test_two_inner_nodes_with_one_id():
    ui = nested()
    inner_node(ui, OUTER, 12)["id"] = 9  # the muted preview takes the reroute's id
    assert invalid(ui).message == "subgraph 'Generate', inner node 10:9: two inner nodes have this id"


def test_link_from_a_node_that_is_not_there():
    ui = nested()
    definition(ui, INNER)["links"][6]["origin_id"] = 77
    assert "comes from node 77, which is not in the subgraph" in invalid(ui).message


def test_instance_input_index_with_no_subgraph_input():
    ui = nested()
    definition(ui, INNER)["links"][0]["origin_slot"] = 12  # model from subgraph input 12 of 7
    error = invalid(ui)
    assert error.node_id == "10" and "comes from subgraph input 12, but the subgraph has 7 inputs" in error.message
    ui = nested()
    ui["nodes"][5]["inputs"][0]["name"] = "unet"  # a connected input the definition does not have
    error = invalid(ui)
    assert error.node_id == "10"
    assert "input 'unet' is connected, but the subgraph has no input of that name" in error.message


@pytest.mark.parametrize("direct", [True, False])
def test_recursion(direct):
    ui = nested()
    inner = inner_node(ui, INNER, 3)
    inner["type"] = INNER if direct else OUTER  # the sampler replaced by the subgraph itself, or by its parent
    error = invalid(ui)
    name = "'Sample and decode'" if direct else "'Generate'"
    assert error.node_id == "10" and error.message == (
        f"subgraph 'Generate' › 'Sample and decode', inner node 10:7:3: an instance of {name}, so the subgraph "
        f"contains itself ('Generate' › 'Sample and decode' › {name})")


def test_dangling_output_only_matters_when_used():
    ui = nested()
    definition(ui, OUTER)["outputs"][0]["linkIds"] = [55]
    assert "its output 'IMAGE' is connected outside, but names link 55" in invalid(ui).message
    ui["nodes"][6]["inputs"][0]["link"] = None  # nothing uses the output: the rest converts
    ui["links"].pop()
    assert SAMPLER in ui_to_api(ui, REGISTRY)


def test_expansion_is_capped():
    """Instances of instances multiply: 10 levels of 10 instances would be 10**10 nodes."""
    ui = nested()
    outer = definition(ui, OUTER)
    outer["nodes"] += [dict(copy.deepcopy(outer["nodes"][0]), id=100 + i) for i in range(200)]
    inner = definition(ui, INNER)
    inner["nodes"] += [dict(copy.deepcopy(inner["nodes"][1]), id=100 + i, inputs=[]) for i in range(200)]
    assert "more than 20000 nodes" in invalid(ui).message


# --- end to end --------------------------------------------------------------------------------------


def test_nested_subgraph_runs_and_saves_the_twins_pixels(wf, tmp_path):
    """`sld run` on the nested file, with --set on an inner node by its execution id, gives the
    flattened twin's image; an inner input fed by a promoted widget is set on the instance."""
    code, _, err = wf.cli("run", TWIN_UI, "--output-dir", tmp_path / "twin", "--device", "cpu", "--quiet",
                          "--set", "6.steps=3", "--set", "6.seed=5")
    assert code == 0, err
    code, _, err = wf.cli("run", NESTED, "--output-dir", tmp_path / "nested", "--device", "cpu", "--quiet",
                          "--set", f"{SAMPLER}.steps=3", "--set", "10.seed=5")
    assert code == 0, err
    [twin], [mine] = wf.files_under(tmp_path / "twin"), wf.files_under(tmp_path / "nested")
    assert np.array_equal(pixels(twin), pixels(mine))


# --- --set on subgraphs ------------------------------------------------------------------------------

def test_set_on_inner_nodes_and_promoted_widgets():
    from comfyui_sld.headless.workflow import set_input

    workflow = parse_workflow(nested(), REGISTRY)
    set_input(workflow, SAMPLER, "steps", 4, REGISTRY)  # an inner node, by its execution id
    assert workflow.prompt[SAMPLER]["inputs"]["steps"] == 4
    assert inner_node(workflow.ui, INNER, 3)["widgets_values"][2] == 4  # written into its definition
    set_input(workflow, "10", "seed", 5, REGISTRY)  # the promoted widget, on the instance
    assert workflow.prompt[SAMPLER]["inputs"]["seed"] == 5 and workflow.ui["nodes"][5]["widgets_values"] == [5]
    for node_id, name, expected in [
        (SAMPLER, "seed", "takes its value from the widget 'seed' of subgraph node 10; set that one: --set 10.seed="),
        ("10", "steps", "subgraph node 10 has no promoted widget 'steps'; its promoted widgets: seed"),
        ("10:7", "seed", "this promoted widget feeds nothing: the instance's input is connected"),
    ]:
        with pytest.raises(WorkflowError) as info:
            set_input(workflow, node_id, name, 1, REGISTRY)
        assert (info.value.node_id, info.value.input_name) == (node_id, name) and expected in info.value.message
    assert inner_node(workflow.ui, OUTER, 7)["widgets_values"] == [123]  # a refused --set changes nothing


# --- the nested file broken at random: a WorkflowError naming a node of the canvas, or a prompt ------

JUNK = [None, -10, -20, 0, 3, 99, "x", "", [], {}, [1, 2], {"id": 1}, True, 1.5, OUTER, INNER]


@st.composite
def broken_nested(draw):
    """The nested fixture with 1-3 values inside its definitions (or its instance) replaced or removed."""
    ui = nested()
    for _ in range(draw(st.integers(1, 3))):
        try:
            _break_one(draw, ui)
        except (KeyError, TypeError, AttributeError, IndexError, InvalidArgument):
            pass  # an earlier change removed what this one would pick
    return ui


def _break_one(draw, ui):
    where = draw(st.sampled_from(["instance", "definition", "node", "slot", "link", "io"]))
    subgraph = draw(st.sampled_from(ui["definitions"]["subgraphs"]))
    if where == "instance":
        target = ui["nodes"][5]
    elif where == "definition":
        target = subgraph
    elif where == "node":
        target = draw(st.sampled_from(subgraph["nodes"]))
    elif where == "slot":
        node = draw(st.sampled_from(subgraph["nodes"]))
        target = draw(st.sampled_from(node["inputs"])) if node["inputs"] else node
    elif where == "link":
        target = draw(st.sampled_from(subgraph["links"]))
    else:
        target = draw(st.sampled_from(subgraph["inputs"] + subgraph["outputs"]))
    key = draw(st.sampled_from(sorted(target)))
    if draw(st.booleans()):
        target[key] = draw(st.sampled_from(JUNK))
    else:
        del target[key]


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(broken_nested())
def test_broken_subgraphs_are_refused_naming_a_visible_node(ui):
    top = {str(n.get("id")) for n in ui["nodes"]}
    try:
        prompt = ui_to_api(ui, REGISTRY)
    except WorkflowError as error:
        named = error.node_id in top or (error.node_id is None and error.message.startswith("nodes["))
        assert named and "\n" not in str(error), str(error)
        return
    assert all(node_id in top or node_id.split(":")[0] in top for node_id in prompt)

