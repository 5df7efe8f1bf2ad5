"""Faults `sld serve` must survive: an interrupt mid-sampling, clients that vanish or never read, a
full queue, and `kill -9` mid-queue followed by a restart on the same output folder."""
import json
import os
import signal
import time
import uuid

import websocket
from PIL import Image

from .conftest import Server, assert_comfy_error, load_api, quick

LONG = 3000  # sampling steps no test waits for: each of these prompts is interrupted or killed


def connect(server, client_id):
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=120)
    assert json.loads(ws.recv())["type"] == "status"
    return ws


def receive_until(ws, kind, prompt_id):
    """Messages up to and including the first `kind` for `prompt_id`."""
    seen = []
    while True:
        message = json.loads(ws.recv())
        seen.append(message)
        if message["type"] == kind and message["data"].get("prompt_id") == prompt_id:
            return seen


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def saved_images(folder):
    return sorted(p for p in folder.rglob("*.png") if not p.name.startswith("."))


def test_interrupt_mid_sampling_ends_that_prompt_and_the_next_runs(server):
    client = str(uuid.uuid4())
    ws = connect(server, client)
    try:
        before = saved_images(server.output)
        long_id = server.queue(quick(load_api("sld_txt2img"), steps=LONG, seed=11), client_id=client)
        next_id = server.queue(quick(load_api("sld_txt2img"), steps=2, seed=12), client_id=client)
        receive_until(ws, "progress", long_id)
        status, body, _ = server.request("POST", "/interrupt", {"prompt_id": long_id})
        assert status == 200
        seen = receive_until(ws, "executing", long_id)
        while seen[-1]["data"]["node"] is not None:
            seen += receive_until(ws, "executing", long_id)
    finally:
        ws.close()
    [interrupted] = [m["data"] for m in seen if m["type"] == "execution_interrupted"]
    assert interrupted["node_id"] == "6" and interrupted["node_type"] == "SLDKSampler"
    assert not [m for m in seen if m["type"] in ("execution_success", "execution_error")]
    entry = server.wait(long_id)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted" and entry["outputs"] == {}
    assert server.wait(next_id)["status"]["completed"] is True
    assert len(saved_images(server.output)) == len(before) + 1  # only the second prompt's image


def test_vanished_and_silent_clients_do_not_hold_up_the_worker(server):
    silent = connect(server, "silent")  # connected, never reads another message
    vanishing = connect(server, "vanishing")
    try:
        gone_id = server.queue(quick(load_api("sld_txt2img"), steps=40, seed=21), client_id="vanishing")
        receive_until(vanishing, "progress", gone_id)
        vanishing.sock.close()  # the TCP connection dies mid-run, without a WebSocket close
        silent_id = server.queue(quick(load_api("sld_txt2img"), steps=40, seed=22), client_id="silent")
        third = connect(server, "third")
        try:
            third_id = server.queue(quick(load_api("sld_txt2img"), steps=2, seed=23), client_id="third")
            receive_until(third, "execution_success", third_id)
        finally:
            third.close()
        for prompt_id in (gone_id, silent_id, third_id):
            assert server.wait(prompt_id)["status"]["completed"] is True
    finally:
        silent.close()
    assert server.request("GET", "/prompt")[1] == {"exec_info": {"queue_remaining": 0}}


def test_full_queue_answers_503_with_retry_after(tmp_path):
    srv = Server(tmp_path, "--max-queue", "1")
    try:
        running = srv.queue(quick(load_api("sld_txt2img"), steps=LONG, seed=31))
        wait_for(lambda: srv.request("GET", "/queue")[1]["queue_running"])
        waiting = srv.queue(quick(load_api("sld_txt2img"), steps=2, seed=32))
        status, body, headers = srv.request("POST", "/prompt", {"prompt": quick(load_api("sld_txt2img"), seed=33)})
        assert_comfy_error(status, body, 503)
        assert body["error"]["type"] == "queue_full"
        assert int(headers["Retry-After"]) >= 1
        queue = srv.request("GET", "/queue")[1]
        assert [item[1] for item in queue["queue_running"]] == [running]
        assert [item[1] for item in queue["queue_pending"]] == [waiting]
        assert srv.request("POST", "/queue", {"delete": [waiting]})[0] == 200
        assert srv.request("GET", "/queue")[1]["queue_pending"] == []
        assert srv.request("POST", "/interrupt")[0] == 200
        assert srv.wait(running)["status"]["status_str"] == "error"
        assert srv.request("GET", f"/history/{waiting}")[1] == {}  # taken off the queue: never ran
        assert srv.wait(srv.queue(quick(load_api("sld_txt2img"), steps=2, seed=34)))["status"]["completed"]
    finally:
        srv.stop()


def test_kill_9_mid_queue_then_restart_keeps_history_and_reports_the_lost_prompts(tmp_path):
    srv = Server(tmp_path)
    done_id = srv.queue(quick(load_api("sld_txt2img"), steps=2, seed=41))
    done = srv.wait(done_id)
    [image] = done["outputs"]["8"]["images"]
    ws = connect(srv, "killer")
    running_id = srv.queue(quick(load_api("sld_txt2img"), steps=LONG, seed=42), client_id="killer")
    receive_until(ws, "progress", running_id)
    waiting_id = srv.queue(quick(load_api("sld_txt2img"), steps=2, seed=43))
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait()
    ws.close()
    stale = srv.output / ".sld_txt2img_00009_.png.0123456789ab.tmp"  # what a kill mid-write leaves
    stale.write_bytes(b"\x89PNG half")

    srv.stop()
    srv.start()
    try:
        assert not stale.exists()
        for png in saved_images(srv.output):  # no half-written file under a real name
            with Image.open(png) as opened:
                opened.load()
        history = srv.request("GET", "/history")[1]
        assert list(history) == [done_id, running_id, waiting_id]
        assert history[done_id] == done
        for prompt_id, word in ((running_id, "while this prompt was running"), (waiting_id, "before this prompt ran")):
            status = history[prompt_id]["status"]
            assert status["status_str"] == "error" and status["completed"] is False
            [(kind, data)] = status["messages"]
            assert kind == "execution_error" and word in data["exception_message"]
        status, content, _ = srv.request("GET", f"/view?filename={image['filename']}&type=output")
        assert status == 200 and content == (srv.output / image["filename"]).read_bytes()
        assert srv.wait(srv.queue(quick(load_api("sld_txt2img"), steps=2, seed=44)))["status"]["completed"]
    finally:
        srv.stop()
