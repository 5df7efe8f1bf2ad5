"""Secure defaults: a non-loopback --listen needs a token (or --insecure); with a token every route and
the WebSocket demand it (Bearer, HTTP Basic as comfy-api-simplified sends it, or ?token=); requests
from another origin, or addressed to another host name (DNS rebinding), are refused."""
import base64
import json
import subprocess
import sys

import pytest
import websocket
from comfy_api_simplified import ComfyApiWrapper

from .conftest import Server, assert_comfy_error, load_api, quick

TOKEN = "s3cret-token-for-tests"


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "192.0.2.1", "example.org"])
def test_a_public_listen_address_needs_a_token(tmp_path, listen):
    result = subprocess.run([sys.executable, "-m", "comfyui_sld.headless.cli", "serve", "--listen", listen,
                             "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert "--auth-token" in result.stderr and "--insecure" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was created


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("locked"), "--auth-token", TOKEN)
    srv.token = TOKEN  # sent by srv.request unless a test sets its own Authorization header
    yield srv
    srv.stop()


ROUTES = [("GET", "/prompt"), ("POST", "/prompt"), ("GET", "/queue"), ("POST", "/queue"), ("POST", "/interrupt"),
          ("GET", "/history"), ("GET", "/history/x"), ("POST", "/history"), ("GET", "/view?filename=a.png"),
          ("POST", "/upload/image"), ("GET", "/object_info"), ("GET", "/object_info/SaveImage"),
          ("GET", "/system_stats"), ("GET", "/models"), ("GET", "/models/checkpoints"), ("GET", "/embeddings"),
          ("GET", "/features"), ("GET", "/api/prompt"), ("GET", "/ws"), ("GET", "/")]


@pytest.mark.parametrize("method, path", ROUTES)
@pytest.mark.parametrize("credentials", [None, "Bearer wrong", "Basic " + base64.b64encode(b"user:wrong").decode(),
                                         "Bearer " + TOKEN[:-1]])
def test_every_route_refuses_a_missing_or_wrong_token(locked, method, path, credentials):
    headers = {"Authorization": credentials} if credentials else {"Authorization": ""}
    status, body, response_headers = locked.request(method, path, raw=b"{}" if method == "POST" else None, headers=headers)
    assert_comfy_error(status, body, 401)
    assert body["error"]["type"] == "unauthorized" and "Bearer" in response_headers["WWW-Authenticate"]


def test_the_websocket_needs_the_token(locked):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{locked.port}/ws?clientId=a", timeout=30)
    assert refused.value.status_code == 401
    ws = websocket.create_connection(f"ws://127.0.0.1:{locked.port}/ws?clientId=a&token={TOKEN}", timeout=30)
    assert json.loads(ws.recv())["type"] == "status"
    ws.close()


def test_the_right_token_opens_every_way_in(locked):
    for header in (f"Bearer {TOKEN}", "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()):
        assert locked.request("GET", "/queue", headers={"Authorization": header})[0] == 200
    assert locked.request("GET", f"/prompt?token={TOKEN}", headers={"Authorization": ""})[0] == 200
    # comfy-api-simplified, unchanged: HTTP Basic on requests and in the WebSocket URL
    api = ComfyApiWrapper(locked.url, user="sld", password=TOKEN)
    prompt = quick(load_api("sld_txt2img"), steps=1, seed=3)
    prompt_id, images = __import__("asyncio").run(api.queue_prompt_and_wait(prompt))
    assert images == [] and api.get_history(prompt_id)[prompt_id]["status"]["completed"] is True


def test_the_token_is_not_shown_in_system_stats(locked):
    argv = locked.request("GET", "/system_stats")[1]["system"]["argv"]
    assert TOKEN not in json.dumps(argv) and "***" in argv


def test_other_origins_and_host_names_are_refused(server):
    status, body, _ = server.request("POST", "/prompt", {"prompt": {}}, headers={"Origin": "http://evil.example"})
    assert_comfy_error(status, body, 403)
    assert body["error"]["type"] == "forbidden_origin"
    status, body, _ = server.request("GET", "/queue", headers={"Host": f"rebound.example:{server.port}"})
    assert_comfy_error(status, body, 403)
    assert body["error"]["type"] == "forbidden_host"
    same = {"Origin": server.url, "Host": f"127.0.0.1:{server.port}"}
    assert server.request("GET", "/queue", headers=same)[0] == 200
    assert server.request("GET", "/queue", headers={"Host": f"localhost:{server.port}"})[0] == 200
