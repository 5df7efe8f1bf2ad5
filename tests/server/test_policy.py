"""The safety policy: the rules on validated graphs (in this process), and a server under
--require-sld weak and require_checker demo_pixel (from a policy file) that refuses what breaks them,
writes nothing for a refused graph, and never writes or serves a pixel that did not pass the checker."""
import json
import shutil
import uuid

import numpy as np
import pytest
import torch
import websocket
from PIL import Image

from comfyui_sld.headless.run import Executor
from comfyui_sld.headless.server import options
from comfyui_sld.headless.server.policy import POLICY_PRESETS, Policy
from comfyui_sld.nodes.context import Runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.sld_core.safety.demo_pixel import DemoPixelChecker

from .conftest import WORKFLOWS, Server, assert_comfy_error, load_api

CHECKER = "demo_pixel"  # the demo model's exact pixel checker: magenta is its unsafe concept


def checked(checker=CHECKER, preset="weak", steps=20, text="a magenta square", **checker_inputs):
    """The shipped checked workflow, with the checker, preset and prompt a test needs."""
    prompt = load_api("sld_txt2img_checked")
    prompt["2"]["inputs"]["text"] = text
    prompt["6"]["inputs"].update(sld_preset=preset, steps=steps)
    prompt["8"]["inputs"]["checker_name"] = checker
    prompt["9"]["inputs"].update(checker_inputs)
    return prompt


def plain_ksampler(prompt, node_id="6"):
    node = prompt[node_id]
    node["class_type"] = "KSampler"
    node["inputs"] = {k: v for k, v in node["inputs"].items() if not k.startswith("sld_") and k != "safety_concept"}
    return prompt


def problems(node_errors):
    """{(node id, input name)} of a node_errors document."""
    return {(node_id, e["extra_info"].get("input_name")) for node_id, entry in node_errors.items() for e in entry["errors"]}


@pytest.fixture(scope="module")
def executor(tmp_path_factory):
    return Executor(Runtime(models=ModelFolders(tmp_path_factory.mktemp("models")), input_dir=WORKFLOWS / "input"),
                    progress=False)


def violations(executor, policy, prompt):
    validated, outputs = executor.validate(prompt)
    return problems(policy.violations(validated, outputs, executor.registry))


def test_the_command_line_offers_the_policy_presets():
    assert list(options.POLICY_PRESETS) == POLICY_PRESETS == ["weak", "medium", "strong", "max"]


@pytest.mark.parametrize("required, weaker", [("weak", set()), ("medium", {"weak"}), ("strong", {"weak", "medium"}),
                                              ("max", {"weak", "medium", "strong"})])
def test_presets_weaker_than_required_are_refused(executor, required, weaker):
    policy = Policy(require_sld=required)
    for name in ["disabled"] + POLICY_PRESETS:
        prompt = load_api("sld_txt2img")
        prompt["6"]["inputs"]["sld_preset"] = name
        expect = {("6", "sld_preset")} if name in weaker | {"disabled"} else set()
        assert violations(executor, policy, prompt) == expect, name


def test_sampling_without_sld_or_where_sld_cannot_act_is_refused(executor):
    policy = Policy(require_sld="medium")
    assert violations(executor, policy, plain_ksampler(load_api("sld_txt2img"))) == {("6", "sampler_name")}
    compare = violations(executor, policy, load_api("sld_compare"))
    assert compare == {("6", "sld_preset")}  # node 6 is the disabled half; node 7 (strong) passes
    low_cfg = load_api("sld_txt2img")
    low_cfg["6"]["inputs"]["cfg"] = 1.0
    assert violations(executor, policy, low_cfg) == {("6", "cfg")}
    short = load_api("sld_txt2img")
    short["6"]["inputs"]["steps"] = 10  # medium's warm-up is 10 steps: SLD would never apply
    assert violations(executor, policy, short) == {("6", "steps")}


def test_custom_values_are_judged_parameter_by_parameter(executor):
    policy = Policy(require_sld="medium")
    prompt = load_api("sld_txt2img")
    prompt["6"]["inputs"].update(sld_preset="custom", sld_guidance_scale=1500.0, sld_warmup_steps=5,
                                 sld_threshold=0.02, sld_momentum_scale=0.3, sld_momentum_beta=0.5)
    assert violations(executor, policy, prompt) == set()
    prompt["6"]["inputs"]["sld_momentum_beta"] = 0.39
    validated, outputs = executor.validate(prompt)
    errors = policy.violations(validated, outputs, executor.registry)
    [error] = errors["6"]["errors"]
    assert "sld_momentum_beta 0.39" in error["details"] and "custom" in error["details"]
    assert errors["6"]["dependent_outputs"] == ["8"]


def test_output_images_must_come_straight_from_the_required_checker(executor):
    policy = Policy(require_checker=CHECKER)
    assert violations(executor, policy, checked()) == set()
    assert violations(executor, policy, load_api("sld_txt2img")) == {("8", "images")}
    assert violations(executor, policy, checked(checker="sld_demo_checker")) == {("9", "safety_checker")}
    assert violations(executor, policy, checked(action="flag_only")) == {("9", "action")}
    assert violations(executor, policy, checked(action="blur")) == {("9", "action")}
    blur = Policy(require_checker=CHECKER, action="blur")
    assert violations(executor, blur, checked(action="blur")) == violations(executor, blur, checked()) == set()
    assert violations(executor, policy, checked(sensitivity=-0.1)) == {("9", "sensitivity")}
    batched = checked()  # an ImageBatch after the checker could mix in unchecked pixels
    batched["11"] = {"class_type": "ImageBatch", "inputs": {"image1": ["9", 0], "image2": ["7", 0]}}
    batched["10"]["inputs"]["images"] = ["11", 0]
    assert violations(executor, policy, batched) == {("10", "images")}
    preview = checked()
    preview["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}}
    assert violations(executor, policy, preview) == {("12", "images")}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """The policy from a file (test_policy_file.py checks reading it), its require_sld overridden by a flag."""
    tmp = tmp_path_factory.mktemp("policy")
    (tmp / "policy.toml").write_text(f'require_sld = "max"\nrequire_checker = "{CHECKER}"\n')
    srv = Server(tmp, "--policy", str(tmp / "policy.toml"), "--require-sld", "weak")
    yield srv
    srv.stop()


def test_policy_is_reported(guarded):
    expected = {"require_sld": "weak", "require_checker": CHECKER, "checker_action": "black_out", "on_violation": "reject"}
    assert guarded.request("GET", "/system_stats")[1]["sld"]["policy"] == expected
    assert guarded.request("GET", "/api/features")[1]["sld_policy"] == expected


@pytest.mark.parametrize("name, prompt, offenders", [
    ("no checker", lambda: load_api("sld_txt2img"), {("8", "images")}),
    ("SLD disabled", lambda: load_api("sld_compare"), {("6", "sld_preset"), ("12", "images")}),
    ("plain KSampler", lambda: plain_ksampler(checked()), {("6", "sampler_name")}),
    ("other checker", lambda: checked(checker="sld_demo_checker"), {("9", "safety_checker")}),
    ("flag only", lambda: checked(action="flag_only"), {("9", "action")}),
])
def test_graphs_breaking_the_policy_are_refused_and_write_nothing(guarded, name, prompt, offenders):
    before = sorted(guarded.output.rglob("*.png"))
    status, body, _ = guarded.request("POST", "/prompt", {"prompt": prompt()})
    assert_comfy_error(status, body, 400)
    assert problems(body["node_errors"]) == offenders
    assert all(e["type"] == "policy_violation" for entry in body["node_errors"].values() for e in entry["errors"])
    assert sorted(guarded.output.rglob("*.png")) == before


def test_no_unchecked_pixel_is_written_or_served(guarded, tmp_path):
    client = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{guarded.port}/ws?clientId={client}")
    frames = []
    try:
        prompt_id = guarded.queue(checked(), client_id=client)
        while True:
            frames.append(ws.recv())
            if isinstance(frames[-1], str) and json.loads(frames[-1])["type"] == "executing" \
                    and json.loads(frames[-1])["data"]["node"] is None:
                break
    finally:
        ws.close()
    assert all(isinstance(frame, str) for frame in frames)  # no image ever goes out over the WebSocket
    entry = guarded.wait(prompt_id)
    assert entry["status"]["completed"] is True
    written = {p.relative_to(guarded.output).as_posix() for p in guarded.output.rglob("*") if p.is_file()
               and not p.name.startswith(".")}
    recorded = {i["filename"] for e in guarded.request("GET", "/history")[1].values()
                for out in e["outputs"].values() for i in out.get("images", [])}
    assert written == recorded and len(written) == 4
    blacked = 0
    for name in sorted(written):  # each file re-checked independently: black, or passes the pixel rule
        status, content, _ = guarded.request("GET", f"/view?filename={name}")
        assert status == 200 and content == (guarded.output / name).read_bytes()
        pixels = np.asarray(Image.open(guarded.output / name).convert("RGB"))
        if not pixels.any():
            blacked += 1
        else:
            [result] = DemoPixelChecker().check(torch.from_numpy(pixels[None].astype(np.float32) / 255), 0.0)
            assert not result.flagged, name
    assert blacked >= 1  # the magenta prompt did produce images the checker had to black out

    shutil.copy(WORKFLOWS / "input" / "sld_example.png", guarded.output / "planted.png")
    for query in ("filename=planted.png&type=output", "filename=sld_example.png&type=input"):
        status, body, _ = guarded.request("GET", f"/view?{query}")
        assert_comfy_error(status, body, 403)
        assert body["error"]["type"] == "policy_violation"


@pytest.mark.parametrize("from_file", [False, True])
def test_an_unknown_required_checker_stops_the_start(tmp_path, from_file):
    (tmp_path / "p.json").write_text('{"require_checker": "no_such_checker"}')
    where = f"policy file {tmp_path / 'p.json'}: require_checker" if from_file else "--require-checker"
    with pytest.raises(RuntimeError, match=f"error: {where} no_such_checker: no such checker; available: .*demo_pixel"):
        Server(tmp_path, *(["--policy", str(tmp_path / "p.json")] if from_file else ["--require-checker", "no_such_checker"]))
