"""The advanced samplers' step inputs, unknown node names and `sld nodes` (issue 19, points 6 and the
bad-input suite): each bad value is a one-line error naming node and input, exit code 2, nothing written."""
import json

import pytest

from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS


def advanced(wf, class_type="SLDKSamplerAdvanced", **values):
    """sld_txt2img with its sampler (node 6) as an advanced sampler, SLD inputs kept where it has them."""
    prompt = wf.load_api("sld_txt2img")
    inputs = prompt["6"]["inputs"]
    inputs["noise_seed"] = inputs.pop("seed")
    del inputs["denoise"]
    if class_type == "KSamplerAdvanced":
        inputs = {k: v for k, v in inputs.items() if not k.startswith("sld_") and k != "safety_concept"}
    inputs.update(add_noise="enable", steps=4, start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable")
    inputs.update(values)
    prompt["6"] = {"class_type": class_type, "inputs": inputs}
    return prompt


def write(tmp_path, prompt):
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(prompt))
    return path


CASES = [  # (class type, inputs, the input named, words of the message)
    ("SLDKSamplerAdvanced", dict(steps=0), "steps", "smaller than min of 1"),
    ("SLDKSamplerAdvanced", dict(steps=10001), "steps", "bigger than max of 10000"),
    ("SLDKSamplerAdvanced", dict(start_at_step=-1), "start_at_step", "smaller than min of 0"),
    ("SLDKSamplerAdvanced", dict(end_at_step=10001), "end_at_step", "bigger than max of 10000"),
    ("SLDKSamplerAdvanced", dict(start_at_step=2.5), "start_at_step", "INT"),
    ("SLDKSamplerAdvanced", dict(start_at_step=4), "start_at_step", "start_at_step 4 is not below steps 4"),
    ("SLDKSamplerAdvanced", dict(start_at_step=9, end_at_step=3), "start_at_step",
     "start_at_step 9 is not below end_at_step 3"),
    ("SLDKSamplerAdvanced", dict(start_at_step=2, end_at_step=2), "start_at_step",
     "start_at_step 2 is not below end_at_step 2"),
    ("KSamplerAdvanced", dict(steps=0), "steps", "smaller than min of 1"),
    ("KSamplerAdvanced", dict(end_at_step=-2), "end_at_step", "smaller than min of 0"),
]


@pytest.mark.parametrize("class_type, values, input_name, words", CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CASES])
def test_a_step_out_of_range_is_one_line_naming_node_and_input(tmp_path, wf, class_type, values, input_name, words):
    out_dir = tmp_path / "out"
    code, out, err = wf.cli("run", write(tmp_path, advanced(wf, class_type, **values)), "--output-dir", out_dir,
                            "--quiet")
    assert code == 2, err
    problems = [line for line in err.splitlines() if line.startswith("  node ")]
    assert len(problems) == 1 and f"node 6 ({class_type}), input '{input_name}'" in problems[0]
    assert words in problems[0]
    assert "Traceback" not in out + err and wf.files_under(out_dir) == []


def test_comfyuis_ksampler_advanced_keeps_an_empty_step_range_valid(tmp_path, wf):
    """ComfyUI runs it and returns the latent unchanged; so does `sld run` (tests/test_sld_advanced.py)."""
    code, _, err = wf.cli("validate", write(tmp_path, advanced(wf, "KSamplerAdvanced", start_at_step=4)))
    assert code == 0, err


def test_a_split_sld_run_validates(tmp_path, wf):
    prompt = advanced(wf, end_at_step=2, return_with_leftover_noise="enable")
    prompt["9"] = {"class_type": "SLDKSamplerAdvanced",
                   "inputs": {**prompt["6"]["inputs"], "latent_image": ["6", 0], "add_noise": "disable",
                              "start_at_step": 2, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    prompt["7"]["inputs"]["samples"] = ["9", 0]
    code, out, err = wf.cli("validate", write(tmp_path, prompt))
    assert code == 0, err


def test_an_unknown_node_names_the_closest_known_ones(tmp_path, wf):
    prompt = advanced(wf)
    prompt["6"]["class_type"] = "KSamplerAdvance"
    path = write(tmp_path, prompt)
    code, out, _ = wf.cli("validate", path, "--json")
    (error,) = json.loads(out)["node_errors"]["6"]["errors"]
    assert code == 2 and error["type"] == "invalid_prompt"
    assert error["extra_info"]["suggestions"] == ["KSamplerAdvanced", "SLDKSamplerAdvanced", "SamplerCustomAdvanced"]
    code, _, err = wf.cli("validate", path)
    assert "node 6 (KSamplerAdvance): Cannot execute because node KSamplerAdvance does not exist." in err
    assert "(did you mean KSamplerAdvanced, SLDKSamplerAdvanced or SamplerCustomAdvanced?)" in err

    prompt["6"]["class_type"] = "vaedecode"  # a name equal but for case comes first
    code, out, _ = wf.cli("validate", write(tmp_path, prompt), "--json")
    assert json.loads(out)["node_errors"]["6"]["errors"][0]["extra_info"]["suggestions"][0] == "VAEDecode"
    prompt["6"]["class_type"] = "Zebra"
    code, _, err = wf.cli("validate", write(tmp_path, prompt))
    assert code == 2 and "did you mean" not in err and "`sld nodes` lists the known nodes" in err


def test_sld_nodes_lists_every_registered_node_with_its_inputs(wf):
    code, out, _ = wf.cli("nodes")
    assert code == 0
    text = " ".join(out.split())
    for name, cls in HEADLESS_NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        inputs = [n for section in ("required", "optional") for n in (spec.get(section) or {})]
        assert f"{name} — {cls.CATEGORY}, " in text
        assert f"{name} — {cls.CATEGORY}, {'ComfyUI + headless' if name.startswith('SLD') else 'headless only'} " \
               f"inputs: {', '.join(inputs) or 'none'}" in text, name
    assert f"{len(HEADLESS_NODE_CLASS_MAPPINGS)} nodes;" in out

    code, _, err = wf.cli("nodes", "SLDKSamplerAdvance")
    assert code == 2 and "no node named 'SLDKSamplerAdvance'; did you mean SLDKSamplerAdvanced" in err
