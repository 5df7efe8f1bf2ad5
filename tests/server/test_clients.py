"""Real ComfyUI clients, unchanged, against `sld serve`: comfy-api-simplified (PyPI) queues every
shipped API workflow and downloads its images, which must equal `sld run` of the same file byte for
byte; a websocket-client script written after ComfyUI's websockets_api_example.py sees ComfyUI's
message sequence; the executor's cache carries over between prompts."""
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import websocket
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper

from comfyui_sld.headless.cli import main as sld

from .conftest import API_NAMES, load_api, quick


def titled(prompt):
    """ComfyUI's "Export (API)" gives every node a `_meta.title`; comfy-api-simplified finds outputs by it."""
    for node_id, node in prompt.items():
        node.setdefault("_meta", {"title": f"{node['class_type']} {node_id}"})
    return prompt


@pytest.mark.parametrize("name", API_NAMES)
def test_comfy_api_simplified_images_equal_sld_run(server, tmp_path, name):
    workflow_file = tmp_path / f"{name}.json"
    prompt = titled(load_api(name))
    workflow_file.write_text(json.dumps(prompt))
    output_title = next(n["_meta"]["title"] for n in prompt.values() if n["class_type"] == "SaveImage")

    api = ComfyApiWrapper(server.url)
    with ThreadPoolExecutor(1) as pool:  # the server runs the prompt while `sld run` runs here (half the wall time)
        served = pool.submit(api.queue_and_wait_images, ComfyWorkflowWrapper(str(workflow_file)), output_title)
        assert sld(["run", str(workflow_file), "--output-dir", str(tmp_path / "run"), "--input-dir", str(server.input),
                    "--device", "cpu", "--quiet"]) == 0
        images = served.result()
    expected = [p.read_bytes() for p in sorted((tmp_path / "run").glob("*.png"))]
    assert expected and all(served_name.startswith(name) for served_name in images)
    assert [images[k] for k in sorted(images)] == expected  # PNG bytes, text chunks included


def test_websocket_client_sees_comfyui_message_order(server):
    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}")
    try:
        first = json.loads(ws.recv())
        assert first["type"] == "status" and first["data"]["sid"] == client_id
        prompt_id = str(uuid.uuid4())
        prompt = quick(load_api("sld_txt2img"), steps=3, seed=1234)
        assert server.queue(prompt, client_id=client_id, prompt_id=prompt_id) == prompt_id
        messages = []
        while True:  # websockets_api_example.py's loop: until executing with node null for our prompt
            out = ws.recv()
            assert isinstance(out, str), "no binary frames: this server sends no previews"
            message = json.loads(out)
            messages.append(message)
            if message["type"] == "executing" and message["data"]["node"] is None:
                assert message["data"]["prompt_id"] == prompt_id
                break
    finally:
        ws.close()
    kinds = [m["type"] for m in messages]
    run = [k for k in kinds if k != "status"]
    assert run[:2] == ["execution_start", "execution_cached"]
    assert run[-2:] == ["execution_success", "executing"]
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"][:-1]
    cached = messages[kinds.index("execution_cached")]["data"]["nodes"]
    # every node that runs is announced once, in dependency order, the cached ones not at all
    assert set(executing) | set(cached) == set(prompt) and not set(executing) & set(cached)
    assert executing.index("6") < executing.index("7") < executing.index("8")
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [p["value"] for p in progress] == [1, 2, 3] and {p["node"] for p in progress} == {"6"}
    assert kinds.index("progress") > kinds.index("executing")
    [executed] = [m["data"] for m in messages if m["type"] == "executed"]
    assert executed["node"] == "8" and executed["output"]["images"][0]["type"] == "output"
    assert "path" not in executed["output"]["images"][0]  # no server paths leak
    # the status with an empty queue comes before the final executing, as in ComfyUI's prompt_worker
    assert kinds[-2] == "status" and messages[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    assert all(m["data"]["prompt_id"] == prompt_id for m in messages if m["type"] != "status")
    entry = server.wait(prompt_id)
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_success"]
    assert entry["outputs"]["8"] == executed["output"]
    assert entry["prompt"][1] == prompt_id and entry["prompt"][3]["client_id"] == client_id


def test_cache_carries_over_between_prompts(server):
    """A second prompt that only changes the seed runs only the sampler onward (ComfyUI's classic cache)."""
    first = server.wait(server.queue(quick(load_api("sld_txt2img"), steps=2, seed=7)))
    second = server.wait(server.queue(quick(load_api("sld_txt2img"), steps=2, seed=8)))
    assert first["status"]["completed"] and second["status"]["completed"]
    cached = dict(second["status"]["messages"])["execution_cached"]["nodes"]
    assert sorted(cached, key=int) == ["1", "2", "3", "4", "5"]  # loader, text encoders, empty latent
