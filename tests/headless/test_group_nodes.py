"""Group nodes in UI workflows (headless/group_nodes.py), checked against ComfyUI's own web app.

The fixtures in tests/fixtures/group_nodes were made by the frontend ComfyUI 0.3.64 ships (1.27.10) in
a browser (save_with_frontend.py there): each shipped workflow was opened, some nodes were converted
to a group node with the frontend's command, widgets were set on the group node, and the app's saved
workflow (NAME.json), its "Save (API)" prompt (NAME.frontend_api.json), the group nodes it built with
their widgets (NAME.frontend_groups.json) and the prompt of the graph before grouping
(NAME.twin_api.json) were written. Ours must give the frontend's prompt where the frontend is right,
and the ungrouped twin's where it is not (it drops links through reroutes and between group nodes).
"""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from comfyui_sld.headless.errors import WorkflowError
from comfyui_sld.headless.group_nodes import _Layout
from comfyui_sld.headless.workflow import parse_workflow, ui_to_api
from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS as REGISTRY
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "group_nodes"
CASES = ["sld_txt2img_grouped", "primitive_reroute_grouped", "two_groups", "load_image_grouped", "old_frontend_grouped"]
GROUP = "Prompts and SLD sampler"  # sld_txt2img_grouped: nodes 2, 3, 4 and 6 of sld_txt2img as group node 9


def load(case, part=""):
    return json.loads((FIXTURES / f"{case}{part}.json").read_text())


def graph(prompt):
    return {node_id: (node["class_type"], node["inputs"]) for node_id, node in prompt.items()}


def renamed(prompt, names):
    """The prompt with node ids (and the links naming them) renamed by `names`."""
    out = {}
    for node_id, (kind, inputs) in graph(prompt).items():
        inputs = {k: [names.get(v[0], v[0]), v[1]] if isinstance(v, list) else v for k, v in inputs.items()}
        out[names.get(node_id, node_id)] = (kind, inputs)
    return out


def invalid(ui):
    with pytest.raises(WorkflowError) as info:
        ui_to_api(ui, REGISTRY)
    return info.value


def definition(ui, name=GROUP):
    return ui["extra"]["groupNodes"][name]


def instance(ui, node_id=9):
    return next(n for n in ui["nodes"] if n["id"] == node_id)


# --- the frontend's own files ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_the_group_node_is_laid_out_as_the_frontend_built_it(case):
    """Widget order (with the extra control-after-generate and upload values), names of the inputs
    and number of outputs, as the app built the group node from the same definition."""
    ui = load(case)
    for name, built in load(case, ".frontend_groups").items():
        layout = _Layout(name, definition(ui, name), REGISTRY, str(built["id"]))
        widgets = [n for w in layout.widgets for n in [w[0]] + ["<extra>"] * w[3]]
        extras = ("control_after_generate", "upload")
        assert widgets == [w if w not in extras else "<extra>" for w, _ in built["widgets"]]
        assert set(layout.inputs) <= set(built["inputs"])
        assert len(layout.outputs) == len(built["outputs"])


@pytest.mark.parametrize("case", ["sld_txt2img_grouped", "load_image_grouped", "old_frontend_grouped"])
def test_gives_the_frontends_save_api_prompt(case):
    """Inner nodes get the ids "group:index"; an outside node feeds inner nodes (the checkpoint's CLIP
    and MODEL, the latent) and an inner node feeds an outside one (VAEDecode takes 9:3's LATENT)."""
    assert graph(ui_to_api(load(case), REGISTRY)) == graph(load(case, ".frontend_api"))


def test_group_widget_values_land_on_the_inner_inputs():
    """The values set on the group node (seed 5 with its 'fixed' control value, steps 3) and the
    others, read in the frontend's order, give the twin's sampler inputs."""
    prompt = ui_to_api(load("sld_txt2img_grouped"), REGISTRY)
    twin = copy.deepcopy(load("sld_txt2img_grouped", ".twin_api"))
    twin["6"]["inputs"].update(seed=5, steps=3)
    assert renamed(prompt, {"9:0": "2", "9:1": "3", "9:2": "4", "9:3": "6"}) == graph(twin)


def test_each_group_widget_value_reaches_its_own_inner_input():
    ui = load("sld_txt2img_grouped")
    layout = _Layout(GROUP, definition(ui), REGISTRY, "9")
    values, position = instance(ui)["widgets_values"], 0
    for _, index, name, extra in layout.widgets:
        values[position] = f"marker {index} {name}"
        position += 1 + extra
    prompt = ui_to_api(ui, REGISTRY)
    for _, index, name, _ in layout.widgets:
        assert prompt[f"9:{index}"]["inputs"][name] == f"marker {index} {name}"


def test_reroute_and_primitive_inside_follow_the_links_where_the_frontend_does_not():
    """The frontend's own prompt drops the sampler's positive input (a reroute inside the group) and
    sends the primitive's value (steps 4) to sld_preset (its widget sockets past the tenth slot are
    paired wrongly). Ours is the ungrouped twin with the group's seed (7)."""
    ui = load("primitive_reroute_grouped")
    frontend = load("primitive_reroute_grouped", ".frontend_api")
    assert "positive" not in frontend["11:3"]["inputs"] and frontend["11:3"]["inputs"]["sld_preset"] == 4
    twin = copy.deepcopy(load("primitive_reroute_grouped", ".twin_api"))
    twin["6"]["inputs"]["seed"] = 7
    assert renamed(ui_to_api(ui, REGISTRY), {"11:1": "2", "11:3": "6", "11:4": "7"}) == graph(twin)


def test_links_between_two_group_nodes():
    """The frontend's prompt loses every input fed by the other group node; ours keeps them."""
    frontend = load("two_groups", ".frontend_api")
    assert not {"positive", "negative", "safety_concept"} & set(frontend["10:0"]["inputs"])
    twin = copy.deepcopy(load("two_groups", ".twin_api"))
    twin["6"]["inputs"]["steps"] = 3
    names = {"9:0": "2", "9:1": "3", "9:2": "4", "10:0": "6", "10:1": "7"}
    assert renamed(ui_to_api(load("two_groups"), REGISTRY), names) == graph(twin)


def test_older_frontends_definition_without_widget_sockets():
    """Before frontend 1.16 inner nodes listed only their real inputs, so each node's widgets came in
    its own input order; the type could be "workflow/Name" (old_frontend_grouped.json, which the app
    loads as the same graph)."""
    old = load("old_frontend_grouped")
    assert instance(old)["type"] == f"workflow/{GROUP}" and instance(old)["widgets_values"][3:5] == [5, "fixed"]
    assert graph(ui_to_api(old, REGISTRY)) == graph(load("sld_txt2img_grouped", ".frontend_api"))


def test_renamed_and_hidden_inputs_and_outputs_from_manage_group_node():
    ui = load("sld_txt2img_grouped")
    definition(ui)["config"] = {"3": {"input": {"model": {"name": "unet"}}, "output": {"0": {"name": "latent"}}}}
    next(s for s in instance(ui)["inputs"] if s["name"] == "model")["name"] = "unet"
    assert graph(ui_to_api(ui, REGISTRY)) == graph(load("sld_txt2img_grouped", ".frontend_api"))
    definition(ui)["config"]["3"]["input"]["latent_image"] = {"visible": False}
    error = invalid(ui)
    assert (error.node_id, error.input_name) == ("9", "latent_image") and "has no input of that name" in error.message
    definition(ui)["config"] = {"3": {"output": {"0": {"visible": False}}}}
    next(s for s in instance(ui)["inputs"] if s["name"] == "unet")["name"] = "model"
    assert "the group has 0 outputs" in invalid(ui).message


def test_an_outside_link_into_a_group_widgets_socket_reaches_the_inner_input():
    """Saved files list a widget's socket only when it is connected; it is matched by name (the
    frontend pairs sockets past an inner node's tenth slot with the wrong inner inputs)."""
    ui = load("sld_txt2img_grouped")
    ui["links"].append([30, 5, 0, 9, 5, "FLOAT"])  # validation, not the conversion, checks the types
    instance(ui)["inputs"].append({"name": "denoise", "type": "FLOAT", "widget": {"name": "denoise"}, "link": 30})
    assert ui_to_api(ui, REGISTRY)["9:3"]["inputs"]["denoise"] == ["5", 0]


def test_two_instances_of_one_group_get_their_own_ids():
    ui = load("sld_txt2img_grouped")
    ui["nodes"].append(dict(copy.deepcopy(instance(ui)), id=20, outputs=[]))
    instance(ui, 20)["widgets_values"][12] = 8  # its own steps
    prompt = ui_to_api(ui, REGISTRY)
    assert prompt["20:3"]["inputs"] == dict(prompt["9:3"]["inputs"], steps=8, positive=["20:0", 0],
                                            negative=["20:1", 0], safety_concept=["20:2", 0])


def test_muted_and_bypassed_group_nodes_are_not_expanded():
    ui = load("two_groups")
    instance(ui, 10)["mode"] = 2  # muted: nothing of it runs, its image goes nowhere
    prompt = ui_to_api(ui, REGISTRY)
    assert not [n for n in prompt if n.startswith("10")] and "images" not in prompt["8"]["inputs"]
    instance(ui, 10)["mode"] = 0
    instance(ui, 9)["mode"] = 4  # bypassed: no input of its outputs' types, so they feed nothing
    prompt = ui_to_api(ui, REGISTRY)
    assert not [n for n in prompt if n.startswith("9")] and "positive" not in prompt["10:0"]["inputs"]


# --- malformed group nodes: one line naming the group node ------------------------------------------------

def broken(change):
    ui = load("sld_txt2img_grouped")
    change(ui)
    error = invalid(ui)
    assert error.node_id == "9" and "\n" not in str(error), str(error)
    return error.message


def test_missing_definition():
    message = broken(lambda ui: ui["extra"]["groupNodes"].clear())
    assert message == ("is a group node ('workflow>Prompts and SLD sampler'), but the workflow's extra.groupNodes "
                       "has no definition 'Prompts and SLD sampler'")


def test_link_to_a_missing_inner_node():
    message = broken(lambda ui: definition(ui)["links"].append([0, 0, 7, 1, 2, "CONDITIONING"]))
    assert message.startswith("group node 'Prompts and SLD sampler': a link names inner node 7, which is not in "
                              "the group (it has 4 nodes)")


@pytest.mark.parametrize("link, expected", [
    ([0, 0, 3, 40, 2, "CONDITIONING"], "a link goes to input slot 40 of inner node 3 (SLDKSampler), which has 17"),
    ([0, 2, 3, 1, 2, "CONDITIONING"], "a link leaves output slot 2 of inner node 0 (CLIPTextEncode), which has 1"),
    ([0, "x", 3, 1], "a link leaves output slot 'x' of inner node 0"),
    ("junk", "a malformed link: 'junk'"),
])
def test_out_of_range_slots(link, expected):
    assert expected in broken(lambda ui: definition(ui)["links"].append(link))


def test_unknown_inner_node_type():
    message = broken(lambda ui: definition(ui)["nodes"][1].update(type="FancyEncode"))
    assert "inner node 1 is a 'FancyEncode', which sld does not know" in message


def test_widgets_values_of_another_length():
    message = broken(lambda ui: instance(ui)["widgets_values"].pop())
    assert message.startswith("group node 'Prompts and SLD sampler': its widgets_values has 15 values, but the "
                              "group's widgets take 16 (text, CLIPTextEncode text, SLDSafetyConcept text, denoise")


def test_link_from_an_output_the_group_does_not_have():
    message = broken(lambda ui: ui["links"][2].__setitem__(2, 3))  # VAEDecode's samples from output 3
    assert message == ("group node 'Prompts and SLD sampler': a link leaves its output slot 3, but the group has "
                       "1 outputs")


def test_an_inner_nodes_problem_names_the_group_node_and_the_inner_node():
    message = broken(lambda ui: definition(ui)["nodes"][3].update(widgets_values="fast"))
    assert message == ("group node 'Prompts and SLD sampler', inner node 9:3 (SLDKSampler): its widgets_values must "
                       "be a list, got 'fast'")


def test_group_node_inside_a_subgraph_is_refused_at_the_subgraph_node():
    ui = json.loads((ROOT / "tests" / "fixtures" / "subgraphs" / "sld_txt2img_nested.json").read_text())
    inner = ui["definitions"]["subgraphs"][1]["nodes"][0]  # in the subgraph inside the one on the canvas
    inner["type"] = "workflow>Sampler"
    error = invalid(ui)
    assert error.node_id == "10" and "group nodes inside subgraphs do not run" in error.message


JUNK = [None, -1, 0, 3, 99, "x", "", [], {}, [1, 2], {"id": 1}, True, 1.5, "workflow>Prompts and SLD sampler"]


@st.composite
def broken_definitions(draw):
    """The fixture with 1-3 values of its group definition or instance replaced or removed."""
    ui = load("sld_txt2img_grouped")
    group = definition(ui)
    for _ in range(draw(st.integers(1, 3))):
        try:
            where = draw(st.sampled_from(["instance", "definition", "node", "slot", "link"]))
            target = {"instance": lambda: instance(ui), "definition": lambda: group,
                      "node": lambda: draw(st.sampled_from(group["nodes"])),
                      "slot": lambda: draw(st.sampled_from(draw(st.sampled_from(group["nodes"]))["inputs"])),
                      "link": lambda: draw(st.sampled_from(group["links"]))}[where]()
            key = draw(st.sampled_from(sorted(target) if isinstance(target, dict) else range(len(target))))
            if draw(st.booleans()) or isinstance(target, list):
                target[key] = draw(st.sampled_from(JUNK))
            else:
                del target[key]
        except (KeyError, TypeError, AttributeError, IndexError, InvalidArgument):
            pass  # an earlier change removed what this one would pick
    return ui


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(broken_definitions())
def test_broken_group_nodes_are_refused_naming_a_visible_node(ui):
    top = {str(n.get("id")) for n in ui["nodes"]}
    try:
        prompt = ui_to_api(ui, REGISTRY)
    except WorkflowError as error:
        assert (error.node_id in top or error.node_id is None) and "\n" not in str(error), str(error)
        return
    assert all(node_id in top or node_id.split(":")[0] in top for node_id in prompt)


# --- end to end ----------------------------------------------------------------------------------------


def test_the_frontends_group_node_file_runs_and_gives_the_twins_pixels(wf, tmp_path):
    """`sld run` on the file the frontend saved gives, bit for bit, the image of the ungrouped shipped
    workflow with the values set on the group node (seed 5, 3 steps)."""
    code, _, err = wf.cli("run", ROOT / "workflows" / "sld_txt2img.json", "--output-dir", tmp_path / "twin",
                          "--device", "cpu", "--quiet", "--set", "6.steps=3", "--set", "6.seed=5")
    assert code == 0, err
    code, _, err = wf.cli("run", FIXTURES / "sld_txt2img_grouped.json", "--output-dir", tmp_path / "grouped",
                          "--device", "cpu", "--quiet")
    assert code == 0, err
    [twin], [mine] = wf.files_under(tmp_path / "twin"), wf.files_under(tmp_path / "grouped")
    assert np.array_equal(pixels(twin), pixels(mine))


def test_the_workflow_metadata_stays_the_saved_file():
    ui = load("sld_txt2img_grouped")
    workflow = parse_workflow(copy.deepcopy(ui), REGISTRY)
    assert workflow.ui == ui and "9:3" in workflow.prompt


# --- --set on group nodes --------------------------------------------------------------------------------

def test_set_on_group_widgets_and_inner_nodes():
    from comfyui_sld.headless.workflow import set_input

    workflow = parse_workflow(load("sld_txt2img_grouped"), REGISTRY)
    stored = instance(workflow.ui)["widgets_values"]
    set_input(workflow, "9", "steps", 4, REGISTRY)  # a widget of the group node, by the name it shows
    set_input(workflow, "9", "CLIPTextEncode text", "blurry", REGISTRY)
    set_input(workflow, "9:3", "cfg", 3.5, REGISTRY)  # an inner node, by its execution id
    assert workflow.prompt["9:3"]["inputs"]["steps"] == 4 and workflow.prompt["9:1"]["inputs"]["text"] == "blurry"
    assert workflow.prompt["9:3"]["inputs"]["cfg"] == 3.5
    assert stored[1] == "blurry" and stored[12:14] == [4, 3.5]  # where the frontend reads them back
    assert graph(ui_to_api(workflow.ui, REGISTRY)) == graph(workflow.prompt)
    for node_id, name, expected in [
        ("9", "model", "group node 9 has no widget 'model'; its widgets: text, CLIPTextEncode text,"),
        ("9:3", "model", "SLDKSampler has no widget input 'model'"),
    ]:
        with pytest.raises(WorkflowError) as info:
            set_input(workflow, node_id, name, 1, REGISTRY)
        assert (info.value.node_id, info.value.input_name) == (node_id, name) and expected in info.value.message
    assert graph(ui_to_api(workflow.ui, REGISTRY)) == graph(workflow.prompt)  # a refused --set changes nothing


def test_set_on_an_inner_input_without_a_group_widget_writes_the_definition():
    from comfyui_sld.headless.workflow import set_input

    workflow = parse_workflow(load("primitive_reroute_grouped"), REGISTRY)
    set_input(workflow, "11:3", "sld_preset", "max", REGISTRY)  # the frontend's layout leaves it out
    assert workflow.prompt["11:3"]["inputs"]["sld_preset"] == "max"
    assert ui_to_api(workflow.ui, REGISTRY)["11:3"]["inputs"]["sld_preset"] == "max"
    set_input(workflow, "11", "value", 6, REGISTRY)  # the inner primitive's widget sets what it is linked to
    assert workflow.prompt["11:3"]["inputs"]["steps"] == 6
