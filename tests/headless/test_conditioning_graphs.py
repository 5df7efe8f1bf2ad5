"""ComfyUI's conditioning nodes in `sld run` graphs (demo model): a graph of them runs, and an area outside
the image is one line naming the sampler node and its input, with nothing written."""
import json


def sld_graph(wf, tmp_path, **area_inputs):
    """sld_txt2img at 128x64 (demo model, 2 steps) whose positive is a global prompt combined with an area prompt."""
    prompt = wf.load_api("sld_txt2img")
    prompt["6"]["inputs"]["steps"] = 2
    prompt["5"]["inputs"]["width"] = 128
    prompt["20"] = {"class_type": "ConditioningSetArea", "inputs": {"conditioning": ["3", 0], "width": 64,
                    "height": 64, "x": 64, "y": 0, "strength": 1.5, **area_inputs}}
    prompt["21"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0],
                                                                    "conditioning_2": ["20", 0]}}
    prompt["22"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["21", 0],
                                                                             "start": 0.0, "end": 1.0}}
    prompt["23"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["3", 0]}}
    prompt["6"]["inputs"].update(positive=["22", 0], negative=["23", 0])
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(prompt))
    return wf.cli("run", path, "--output-dir", tmp_path / "out", "--device", "cpu", "--quiet")


def test_a_headless_graph_of_conditioning_nodes_runs(wf, tmp_path):
    code, _, err = sld_graph(wf, tmp_path)
    assert code == 0, err
    assert len(wf.files_under(tmp_path / "out")) == 1


def test_an_area_outside_the_image_is_one_line_naming_node_and_input_and_writes_nothing(wf, tmp_path):
    code, _, err = sld_graph(wf, tmp_path, x=128)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 2 and lines[0] == "error: the run failed"
    assert "node 6 (SLDKSampler), input 'positive': positive: the area of entry 2 of 2 at x 128" in lines[1]
    assert "outside the 128x64 image" in lines[1]
    assert wf.files_under(tmp_path / "out") == []


def test_an_empty_timestep_range_is_one_line_naming_node_and_input(wf, tmp_path):
    prompt = wf.load_api("sld_txt2img")
    prompt["20"] = {"class_type": "ConditioningSetTimestepRange", "inputs": {"conditioning": ["2", 0],
                                                                             "start": 0.6, "end": 0.2}}
    prompt["6"]["inputs"]["positive"] = ["20", 0]
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(prompt))
    code, _, err = wf.cli("run", path, "--output-dir", tmp_path / "out", "--device", "cpu", "--quiet")
    assert code != 0 and err.strip().splitlines()[1].startswith(
        "  node 20 (ConditioningSetTimestepRange), input 'end': end: the range from start 0.6 to end 0.2 is empty")
    assert wf.files_under(tmp_path / "out") == []
