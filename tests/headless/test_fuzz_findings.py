"""What the fuzzer (test_fuzz.py) found, one plain case each: every one of these printed a traceback,
named no node, printed raw control characters, or validated and then failed at run time."""
import json

import pytest


def txt2img(wf):
    prompt = wf.load_api("sld_txt2img")
    prompt["6"]["inputs"]["steps"] = 1
    return prompt


def ui(wf, name="sld_txt2img"):
    document = json.loads((wf.root / f"{name}.json").read_text())
    for node in document["nodes"]:
        if node["type"] == "SLDKSampler":
            node["widgets_values"][2] = 1  # steps
    return document


def run(wf, tmp_path, document, *args, command="run"):
    (tmp_path / "models").mkdir(exist_ok=True)
    path = tmp_path / "workflow.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    extra = ["--output-dir", tmp_path / "out", "--quiet"] if command == "run" else []
    code, out, err = wf.cli(command, path, "--input-dir", wf.input_dir, "--models-dir", tmp_path / "models", *extra, *args)
    assert "Traceback" not in out + err
    if code == 2:
        assert wf.files_under(tmp_path / "out") == []
    return code, out, err


def test_a_node_that_is_not_an_object_is_named(wf, tmp_path):
    prompt = txt2img(wf)
    prompt["5"] = None  # was: "is not a ComfyUI workflow", no node named
    code, _, err = run(wf, tmp_path, prompt)
    assert code == 2 and "node 5" in err and "class_type" in err


@pytest.mark.parametrize("depth, named", [(500, True), (100_000, False)])
def test_deeply_nested_values_are_refused(wf, tmp_path, depth, named):
    """A JSON list nested hundreds deep parsed, then overflowed Python's recursion while copying (or,
    deeper, while parsing): a RecursionError traceback."""
    text = json.dumps(txt2img(wf)).replace('"a circle"', "[" * depth + "]" * depth)
    code, _, err = run(wf, tmp_path, text)
    assert code == 2 and "nested too deeply" in err
    assert ("node 2, input 'text'" in err) == named


def test_an_integer_of_thousands_of_digits_is_invalid_json(wf, tmp_path):
    text = json.dumps(txt2img(wf)).replace('"seed": 42', '"seed": ' + "1" * 5000)  # was: ValueError traceback
    code, _, err = run(wf, tmp_path, text)
    assert code == 2 and "not valid JSON" in err


def test_a_huge_link_index_is_shown_short(wf, tmp_path):
    prompt = txt2img(wf)
    prompt["2"]["inputs"]["clip"] = ["1", -(10**400)]
    code, _, err = run(wf, tmp_path, prompt)
    assert code == 2 and "node 2 (CLIPTextEncode), input 'clip': Linked output" in err
    assert max(len(line) for line in err.splitlines()) < 400


@pytest.mark.parametrize("class_type", ["\x1b[2JSaveImage", "Save\nImage", "a" * 3000])
def test_unknown_class_names_are_printed_safely(wf, tmp_path, class_type):
    prompt = txt2img(wf)
    prompt["8"]["class_type"] = class_type
    code, _, err = run(wf, tmp_path, prompt, command="validate")
    assert code == 2 and "node 8" in err
    assert "\x1b" not in err and max(len(line) for line in err.splitlines()) < 2000
    assert len(err.splitlines()) == 2  # header and one problem: a newline in the name is escaped


def test_unprintable_names_in_a_set_are_escaped(wf, tmp_path):
    code, _, err = run(wf, tmp_path, txt2img(wf), "--set=6.st\x1beps=3", command="validate")
    assert code == 2 and "node 6, input 'st\\x1beps'" in err and "\x1b" not in err


@pytest.mark.parametrize("value, code", [("[" * 3000, 0), ("[" * 500 + "]" * 500, 2)])
def test_a_set_value_nested_too_deeply(wf, tmp_path, value, code):
    """json.loads of a --set value raised RecursionError (or the value overflowed later copies). Text
    that is not JSON is a string (a valid prompt); a list nested 500 deep is refused, naming its input."""
    got, _, err = run(wf, tmp_path, txt2img(wf), f"--set=2.text={value}", command="validate")
    assert got == code, err
    assert code == 0 or "node 2, input 'text': --set: a value nested too deeply" in err


def test_an_undeclared_input_is_ignored_at_run_time_too(wf, tmp_path):
    """Validation ignores inputs a node does not declare (as ComfyUI does); the run passed them to the
    node's function: TypeError, exit 1, after validation had said the workflow was fine."""
    prompt = txt2img(wf)
    prompt["5"]["inputs"]["colour"] = "magenta"
    code, _, err = run(wf, tmp_path, prompt)
    assert code == 0, err
    assert len(wf.files_under(tmp_path / "out")) == 1


def test_a_prompt_body_with_odd_extra_data(wf, tmp_path):
    code, _, err = run(wf, tmp_path, {"prompt": txt2img(wf), "extra_data": 5}, command="validate")
    assert code == 0, err


# --- UI format: each of these raised KeyError/TypeError/AttributeError/RecursionError ----------------

def _slot(document, node_id, name):
    node = next(n for n in document["nodes"] if n["id"] == node_id)
    return next(s for s in node["inputs"] if s["name"] == name)


def _node(document, node_id):
    return next(n for n in document["nodes"] if n["id"] == node_id)


def no_name(d):
    del _slot(d, 6, "model")["name"]


def list_link(d):
    _slot(d, 6, "model")["link"] = [4]


def int_widgets(d):
    _node(d, 6)["widgets_values"] = 5


def list_control(d):
    _node(d, 6)["widgets_values"][1] = ["fixed"]  # control_after_generate slot holding a list


def bad_origin(d):
    d["links"][3][2] = "0"  # link 4 (model): origin slot as text


def inputs_int(d):
    _node(d, 6)["inputs"] = -1


def missing_id(d):
    del d["nodes"][0]["id"]


def duplicate_id(d):
    d["nodes"][1]["id"] = d["nodes"][2]["id"]


@pytest.mark.parametrize("mutate, expected", [
    (no_name, "node 6: an input slot without a name"),
    (list_link, "node 6, input 'model': a link id must be a number"),
    (int_widgets, "node 6: its widgets_values must be a list"),
    (list_control, "node 6 (SLDKSampler), input 'steps'"),
    (bad_origin, "node 6, input 'model': its link 4 is malformed"),
    (inputs_int, "node 6: its inputs must be a list of slots"),
    (missing_id, "nodes[0] has no id"),
    (duplicate_id, "two nodes have the id 3"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_malformed_ui_workflows_name_the_node(wf, tmp_path, mutate, expected):
    document = ui(wf)
    mutate(document)
    code, _, err = run(wf, tmp_path, document, command="validate")
    assert code == 2 and expected in err, err


@pytest.mark.parametrize("junk", ["x", {"subgraphs": "x"}, {"subgraphs": [None, {"id": ["x"]}]}])
def test_odd_definitions_are_ignored(wf, tmp_path, junk):
    document = ui(wf)
    document["definitions"] = junk
    assert run(wf, tmp_path, document, command="validate")[0] == 0


def test_links_that_are_not_a_list(wf, tmp_path):
    document = ui(wf)
    document["links"] = {"1": [1, 1, 1, 2, 0, "CLIP"]}
    code, _, err = run(wf, tmp_path, document, command="validate")
    assert code == 2 and "links must be a list" in err


def _reroutes(document, count, loop=False):
    """Put `count` Reroute nodes on link 1 (the CLIP into node 2); with `loop`, close them in a ring."""
    link = document["links"][0]
    origin, slot = link[1], link[2]
    for k in range(count):
        node_id, link_id = 1000 + k, 1000 + k
        document["nodes"].append({"id": node_id, "type": "Reroute", "mode": 0,
                                  "inputs": [{"name": "", "type": "*", "link": link_id}], "outputs": []})
        document["links"].append([link_id, origin, slot, node_id, 0, "CLIP"])
        origin, slot = node_id, 0
    if loop:
        document["links"][-count][1] = origin  # the first reroute's input comes from the last one
    link[1], link[2] = origin, slot


def test_a_long_chain_of_reroutes(wf, tmp_path):
    """The link resolver recursed once per reroute: RecursionError past about a thousand."""
    document = ui(wf)
    _reroutes(document, 1500)
    code, _, err = run(wf, tmp_path, document)
    assert code == 0, err


def test_a_loop_of_reroutes_leaves_the_input_unconnected(wf, tmp_path):
    document = ui(wf)
    _reroutes(document, 3, loop=True)
    code, _, err = run(wf, tmp_path, document)
    assert code == 2 and "node 2 (CLIPTextEncode), input 'clip': Required input is missing" in err


def test_a_long_chain_of_nodes_runs(wf, tmp_path):
    """Execution order was a recursive depth-first walk: RecursionError on a chain of 1500 nodes."""
    prompt = txt2img(wf)
    source = ["7", 0]
    for k in range(1500):
        prompt[f"g{k}"] = {"class_type": "SLDImageGrid", "inputs": {"images": source, "columns": 1, "spacing": 0,
                                                                    "background": 0.0}}
        source = [f"g{k}", 0]
    prompt["8"]["inputs"]["images"] = source
    code, _, err = run(wf, tmp_path, prompt)
    assert code == 0, err


@pytest.mark.parametrize("prefix", ["a" * 300, "sub/" + "b" * 300 + "/x", "é" * 150, "x\ud800"])
def test_a_prefix_no_file_system_takes_is_invalid(wf, tmp_path, prefix):
    """These validated, then the run failed writing the file (exit 1, 'File name too long' or a
    UnicodeEncodeError) and left an empty sub-folder behind."""
    prompt = txt2img(wf)
    prompt["8"]["inputs"]["filename_prefix"] = prefix
    code, _, err = run(wf, tmp_path, prompt)
    assert code == 2 and "node 8 (SaveImage), input 'filename_prefix'" in err, err
    assert not (tmp_path / "out").exists()


def test_a_prefix_of_200_bytes_is_written(wf, tmp_path):
    prompt = txt2img(wf)
    prompt["8"]["inputs"]["filename_prefix"] = "sub/" + "é" * 100
    code, _, err = run(wf, tmp_path, prompt)
    assert code == 0, err
    [png] = wf.files_under(tmp_path / "out")
    assert png.name == "é" * 100 + "_00001_.png"


def test_text_with_a_lone_surrogate_is_invalid(wf, tmp_path):
    """JSON can escape a lone surrogate; the tokenizer cannot take it (TypeError at run time, exit 1)."""
    prompt = txt2img(wf)
    prompt["2"]["inputs"]["text"] = "a circle \ud800"
    code, _, err = run(wf, tmp_path, prompt)
    assert code == 2 and "node 2 (CLIPTextEncode), input 'text'" in err and "lone surrogate" in err


@pytest.mark.parametrize("name, number", [("seed", "1" + "0" * 400), ("cfg", "1" + "0" * 400), ("width", "-" + "9" * 4000)])
def test_integers_too_large_for_a_float(wf, tmp_path, name, number):
    """An integer JSON holds but a float cannot (over 1e308) made float() raise OverflowError: a traceback."""
    node = "5" if name == "width" else "6"
    text = json.dumps(txt2img(wf)).replace(f'"{name}": ', f'"{name}": {number}, "_{name}": ', 1)
    code, _, err = run(wf, tmp_path, text)
    assert code == 2 and f"input '{name}'" in err and f"node {node}" in err
    assert max(len(line) for line in err.splitlines()) < 400


def test_a_node_message_quoting_a_huge_value_is_shortened(wf, tmp_path):
    prompt = wf.load_api("sld_img2img")
    prompt["5"]["inputs"]["image"] = "n" * 5000  # LoadImage's check quoted the OSError with the whole path
    code, _, err = run(wf, tmp_path, prompt, command="validate")
    assert code == 2 and "node 5 (LoadImage), input 'image'" in err
    assert max(len(line) for line in err.splitlines()) < 500


def test_a_malformed_set_is_quoted_short(wf, tmp_path):
    code, _, err = run(wf, tmp_path, txt2img(wf), "--set=1.=" + "1" * 5000, command="validate")
    assert code == 2 and "expected NODE_ID.INPUT=VALUE" in err
    assert max(len(line) for line in err.splitlines()) < 300


@pytest.mark.parametrize("prefix, code", [(".", 2), ("sub/.", 2), ("...", 0), ("a/./b", 0)])
def test_a_prefix_naming_the_folder_itself(wf, tmp_path, prefix, code):
    """'.' validated, then SaveImage refused it at run time ('leads outside the output folder', exit 1)."""
    prompt = txt2img(wf)
    prompt["8"]["inputs"]["filename_prefix"] = prefix
    got, _, err = run(wf, tmp_path, prompt)
    assert got == code, err
    assert code == 0 or "node 8 (SaveImage), input 'filename_prefix'" in err and "names a folder" in err
