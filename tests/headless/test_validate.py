"""Malformed workflows: each one is refused with exit code 2 (1 for run-time failures), a message
naming the node id and the input, no traceback and no file written."""
import json
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
INPUT_DIR = WORKFLOWS / "input"


def load_api(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def files_under(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


def txt2img():
    prompt = load_api("sld_txt2img")
    prompt["6"]["inputs"]["steps"] = 2
    return prompt


def edit(path, value):
    """A case: set prompt[node][inputs][name] (or delete it when value is DELETE)."""
    def apply(prompt):
        node, name = path
        if value is DELETE:
            del prompt[node]["inputs"][name]
        else:
            prompt[node]["inputs"][name] = value
        return prompt
    return apply


DELETE = object()


def replace_node(node, entry):
    def apply(prompt):
        prompt[node] = entry
        return prompt
    return apply


def cycle(prompt):
    prompt["9"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["7", 0], "vae": ["1", 2]}}
    prompt["6"]["inputs"]["latent_image"] = ["9", 0]
    return prompt


def no_outputs(prompt):
    del prompt["8"]
    return prompt


def img2img_image(name):
    def apply(_):
        prompt = load_api("sld_img2img")
        prompt["5"]["inputs"]["image"] = name
        return prompt
    return apply


# (case id, mutation, expected exit code, node id and input the message must name)
CASES = [
    ("unknown-class", replace_node("5", {"class_type": "EmptyLatentImageXL", "inputs": {}}), 2, "5", None),
    ("missing-class-type", replace_node("5", {"inputs": {"width": 64}}), 2, "5", None),
    ("inputs-not-object", replace_node("5", {"class_type": "EmptyLatentImage", "inputs": [64, 64, 1]}), 2, "5", None),
    ("missing-required-input", edit(("6", "steps"), DELETE), 2, "6", "steps"),
    ("link-to-missing-node", edit(("6", "model"), ["99", 0]), 2, "6", "model"),
    ("link-to-missing-output", edit(("6", "model"), ["1", 7]), 2, "6", "model"),
    ("malformed-link", edit(("6", "model"), ["1", 0, 3]), 2, "6", "model"),
    ("latent-into-image", edit(("8", "images"), ["6", 0]), 2, "8", "images"),
    ("clip-into-model", edit(("6", "model"), ["1", 1]), 2, "6", "model"),
    ("constant-for-link", edit(("6", "model"), "sld_demo.safetensors"), 2, "6", "model"),
    ("cycle", cycle, 2, "6", "latent_image"),
    ("steps-below-min", edit(("6", "steps"), 0), 2, "6", "steps"),
    ("steps-above-max", edit(("6", "steps"), 20000), 2, "6", "steps"),
    ("steps-fractional", edit(("6", "steps"), 7.5), 2, "6", "steps"),
    ("seed-negative", edit(("6", "seed"), -1), 2, "6", "seed"),
    ("cfg-wrong-type", edit(("6", "cfg"), "high"), 2, "6", "cfg"),
    ("cfg-bool", edit(("6", "cfg"), True), 2, "6", "cfg"),
    ("denoise-above-max", edit(("6", "denoise"), 1.5), 2, "6", "denoise"),
    ("momentum-beta-above-max", edit(("6", "sld_momentum_beta"), 2.0), 2, "6", "sld_momentum_beta"),
    ("unknown-sampler", edit(("6", "sampler_name"), "euler_magic"), 2, "6", "sampler_name"),
    ("unknown-scheduler", edit(("6", "scheduler"), "cosine"), 2, "6", "scheduler"),
    ("unknown-preset", edit(("6", "sld_preset"), "extreme"), 2, "6", "sld_preset"),
    ("text-wrong-type", edit(("2", "text"), {"prompt": "cat"}), 2, "2", "text"),
    ("width-not-multiple-of-8", edit(("5", "width"), 100), 2, "5", "width"),
    ("width-below-min", edit(("5", "width"), 8), 2, "5", "width"),
    ("too-large-to-allocate", lambda p: edit(("5", "batch_size"), 4096)(edit(("5", "width"), 16384)(
        edit(("5", "height"), 16384)(p))), 2, "5", "batch_size"),
    ("absent-checkpoint", edit(("1", "ckpt_name"), "missing.safetensors"), 2, "1", "ckpt_name"),
    ("checkpoint-path-escape", edit(("1", "ckpt_name"), "../../etc/passwd"), 2, "1", "ckpt_name"),
    ("prefix-parent-dir", edit(("8", "filename_prefix"), "../escaped"), 2, "8", "filename_prefix"),
    ("prefix-nested-parent-dir", edit(("8", "filename_prefix"), "a/../../escaped"), 2, "8", "filename_prefix"),
    ("prefix-absolute", edit(("8", "filename_prefix"), "/tmp/sld_abs"), 2, "8", "filename_prefix"),
    ("prefix-nul-byte", edit(("8", "filename_prefix"), "bad\u0000name"), 2, "8", "filename_prefix"),
    ("prefix-folder-only", edit(("8", "filename_prefix"), "sub/"), 2, "8", "filename_prefix"),
    ("load-image-absent", img2img_image("nope.png"), 2, "5", "image"),
    ("load-image-escape", img2img_image("../sld_txt2img.json"), 2, "5", "image"),
]


@pytest.mark.parametrize("case, mutate, code, node_id, input_name", CASES, ids=[c[0] for c in CASES])
def test_malformed_workflow_is_refused(tmp_path, wf, case, mutate, code, node_id, input_name):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(mutate(txt2img())))
    out_dir = tmp_path / "out"
    (tmp_path / "models").mkdir()  # a --models-dir must exist
    got, out, err = wf.cli("run", path, "--output-dir", out_dir, "--input-dir", INPUT_DIR,
                            "--models-dir", tmp_path / "models", "--quiet")
    assert got == code, err
    assert f"node {node_id}" in err
    if input_name:
        assert f"'{input_name}'" in err
    assert "Traceback" not in out + err
    assert files_under(out_dir) == []


def test_every_problem_is_reported_at_once(tmp_path, wf):
    prompt = txt2img()
    prompt["6"]["inputs"]["steps"] = 0
    prompt["6"]["inputs"]["sampler_name"] = "nope"
    prompt["5"]["inputs"]["width"] = 100
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prompt))
    code, out, _ = wf.cli("validate", path, "--json")
    report = json.loads(out)
    assert code == 2 and report["ok"] is False
    errors = report["node_errors"]
    assert sorted(errors) == ["5", "6"]
    assert {e["extra_info"]["input_name"] for e in errors["6"]["errors"]} == {"steps", "sampler_name"}
    assert errors["6"]["class_type"] == "SLDKSampler" and errors["6"]["dependent_outputs"] == ["8"]
    assert {e["type"] for e in errors["6"]["errors"]} == {"value_smaller_than_min", "value_not_in_list"}


def test_invalid_json_names_the_position(tmp_path, wf):
    path = tmp_path / "bad.json"
    path.write_text('{"1": {"class_type": "SaveImage",, }')
    code, out, err = wf.cli("run", path, "--output-dir", tmp_path / "out")
    assert code == 2 and "not valid JSON" in err and "line 1" in err and "Traceback" not in err


@pytest.mark.parametrize("content", ['[1, 2, 3]', '"text"', '{}'])
def test_non_workflow_json_is_refused(tmp_path, wf, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = wf.cli("validate", path)
    assert code == 2 and "not a ComfyUI workflow" in err


def test_no_output_node(tmp_path, wf):
    prompt = txt2img()
    del prompt["8"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prompt))
    code, _, err = wf.cli("validate", path)
    assert code == 2 and "Prompt has no outputs" in err


@pytest.mark.parametrize("override, node_id, input_name", [
    ("99.seed=1", "99", "seed"), ("6.model=3", "6", "model"), ("6.stepz=3", "6", "stepz"), ("6.steps=0", "6", "steps"),
])
def test_bad_set_override(tmp_path, wf, override, node_id, input_name):
    out_dir = tmp_path / "out"
    code, _, err = wf.cli("run", load_api_path(), "--set", override, "--output-dir", out_dir, "--quiet")
    assert code == 2 and f"node {node_id}" in err and f"'{input_name}'" in err
    assert files_under(out_dir) == []


def load_api_path():
    return WORKFLOWS / "api" / "sld_txt2img.json"


@pytest.mark.parametrize("kind", ["checkpoint", "image"])
def test_corrupt_file_is_a_run_failure(tmp_path, wf, kind):
    """Files that exist but cannot be read fail at run time: exit 1, node and input named."""
    models, inputs, out_dir = tmp_path / "models", tmp_path / "input", tmp_path / "out"
    (models / "checkpoints").mkdir(parents=True)
    inputs.mkdir()
    if kind == "checkpoint":
        (models / "checkpoints" / "broken.safetensors").write_bytes(b"not a safetensors file")
        prompt, node_id, input_name = txt2img(), "1", "ckpt_name"
        prompt["1"]["inputs"]["ckpt_name"] = "broken.safetensors"
    else:
        (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        prompt, node_id, input_name = load_api("sld_img2img"), "5", None
        prompt["5"]["inputs"]["image"] = "broken.png"
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(prompt))
    code, out, err = wf.cli("run", path, "--models-dir", models, "--input-dir", inputs,
                             "--output-dir", out_dir, "--quiet")
    assert code == 1, err
    assert f"node {node_id}" in err and (input_name is None or f"'{input_name}'" in err)
    assert "Traceback" not in out + err and files_under(out_dir) == []
