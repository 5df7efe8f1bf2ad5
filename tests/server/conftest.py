"""`sld serve` started for real: a subprocess on a free port of 127.0.0.1, the embedded demo model,
its own input and output folders; and small helpers every server test uses."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
# The shipped API workflows on the embedded demo model, the server's only model (the SDXL one names
# sd_xl_base_1.0.safetensors: tests/headless/test_sdxl_workflow.py runs it).
API_NAMES = sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json") if '"sld_demo.safetensors"' in p.read_text())
READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def load_api(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def quick(prompt, steps=4, seed=None):
    """A shipped graph with fewer sampling steps (and another seed), for tests about the server, not
    the images. The SLD warm-up is shortened too, so SLD still acts (custom preset)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = steps
            if seed is not None:
                node["inputs"]["seed"] = seed
    return prompt


class Server:
    """One running `sld serve`; `url`, its folders, and plain HTTP helpers (no client library)."""

    def __init__(self, tmp, *options, env=None, output=None):
        self.tmp = Path(tmp)
        self.output = Path(output) if output else self.tmp / "output"
        self.input = self.tmp / "input"
        if not self.input.exists():
            shutil.copytree(WORKFLOWS / "input", self.input)
        self.log_path = self.tmp / f"serve-{time.monotonic_ns()}.log"
        self.options = options
        self.token = None
        self.start(env)

    def start(self, env=None):
        command = [sys.executable, "-m", "comfyui_sld.headless.cli", "serve", "--port", "0", "--device", "cpu",
                   "--output-dir", str(self.output), "--input-dir", str(self.input), *self.options]
        environment = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=environment, cwd=self.tmp)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = READY.search(self.log_path.read_text())
            if found:
                self.port = int(found.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"sld serve exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            time.sleep(0.1)
        raise RuntimeError(f"sld serve did not start:\n{self.log_path.read_text()}")

    def stop(self, sig=signal.SIGINT):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def logs(self):
        return self.log_path.read_text()

    def request(self, method, path, body=None, headers=None, raw=None):
        """(status, parsed JSON or bytes, headers) of one request; never raises for an HTTP status."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = dict(headers or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                status, content, head = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, content, head = error.code, error.read(), error.headers
        try:
            return status, json.loads(content), head
        except ValueError:
            return status, content, head

    def queue(self, prompt, **fields):
        status, body, _ = self.request("POST", "/prompt", {"prompt": prompt, **fields})
        assert status == 200, body
        return body["prompt_id"]

    def wait(self, prompt_id, timeout=120):
        """The prompt's history entry, once it is finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body, _ = self.request("GET", f"/history/{prompt_id}")
            if body:
                return body[prompt_id]
            time.sleep(0.1)
        raise AssertionError(f"prompt {prompt_id} did not finish:\n{self.logs()}")


@pytest.fixture(scope="package")
def server(tmp_path_factory):
    """A plain server (no policy, no token) shared by every test module here that needs one: each start
    and stop costs seconds. Tests must not depend on what others left in its history or folders."""
    srv = Server(tmp_path_factory.mktemp("serve"))
    yield srv
    srv.stop()


def assert_comfy_error(status, body, expected_status=None):
    """A refusal in ComfyUI's shape: 4xx, {"error": {type, message, details, extra_info}, "node_errors": {}}."""
    assert 400 <= status < 500 if expected_status is None else status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error", "node_errors"}, body
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["node_errors"], dict)
    assert "Traceback" not in json.dumps(body)
