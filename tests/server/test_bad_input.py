"""Bad input, each answered 4xx in ComfyUI's error shape ({"error": {type, message, details,
extra_info}, "node_errors": {...}}) with no traceback, while the server keeps serving: malformed
and mistyped bodies, invalid graphs, oversized and deeply nested bodies, paths that try to leave the
/view and /upload/image folders, uploads that are not images."""
import io
import json
import os
import struct
import uuid
import zlib

import pytest
from PIL import Image

from .conftest import Server, assert_comfy_error, load_api, quick

MAX_BODY_MB, MAX_UPLOAD_MB = 0.25, 0.05


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    outside = tmp / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8), "red").save(outside / "secret.png")
    output = tmp / "output"
    output.mkdir()
    os.symlink(outside, output / "escape")  # a folder link out of the output folder
    os.symlink(outside / "secret.png", output / "leak.png")  # a file link out of it
    server = Server(tmp, "--max-body-mb", str(MAX_BODY_MB), "--max-upload-mb", str(MAX_UPLOAD_MB))
    server.queue(quick(load_api("sld_txt2img"), steps=1), prompt_id="taken")
    server.wait("taken")
    yield server
    server.stop()


def graph(edit):
    prompt = quick(load_api("sld_txt2img"), steps=2)
    edit(prompt)
    return prompt


def cycle(prompt):
    prompt["9"] = {"class_type": "ImageBatch", "inputs": {"image1": ["10", 0], "image2": ["7", 0]}}
    prompt["10"] = {"class_type": "ImageBatch", "inputs": {"image1": ["9", 0], "image2": ["7", 0]}}
    prompt["8"]["inputs"]["images"] = ["9", 0]


def nested(depth):
    return "[" * depth + "]" * depth


def png_bomb():
    """A valid PNG header claiming 100000 x 100000 pixels, in a few dozen bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png_bytes():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields, files):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(filename="up.png", data=None, **fields):
    return multipart(fields, {"image": (filename, png_bytes() if data is None else data)})


def prompt_body(**fields):
    return {"prompt": quick(load_api("sld_txt2img"), steps=2), **fields}


def link_to_missing(p):
    p["7"]["inputs"]["vae"] = ["99", 2]


# (id, method, path, JSON body or raw bytes or (raw, headers), expected status, expected error type or None)
CASES = [
    ("malformed JSON", "POST", "/prompt", b"{bad", 400, "invalid_json"),
    ("empty body", "POST", "/prompt", b"", 400, "invalid_json"),
    ("body is a list", "POST", "/prompt", [1, 2], 400, "invalid_json"),
    ("body is a string", "POST", "/prompt", "prompt", 400, "invalid_json"),
    ("body not UTF-8", "POST", "/prompt", b'{"prompt": "\xff\xfe"}', 400, "invalid_json"),
    ("no prompt", "POST", "/prompt", {"client_id": "x"}, 400, "no_prompt"),
    ("prompt is a list", "POST", "/prompt", {"prompt": [1]}, 400, "invalid_prompt"),
    ("prompt is empty", "POST", "/prompt", {"prompt": {}}, 400, "invalid_prompt"),
    ("node is a number", "POST", "/prompt", {"prompt": {"1": 5}}, 400, "invalid_prompt"),
    ("node without class_type", "POST", "/prompt", {"prompt": {"1": {"inputs": {}}}}, 400, "invalid_prompt"),
    ("unknown class", "POST", "/prompt", {"prompt": graph(lambda p: p["7"].update(class_type="VAEDecodeTiledX"))}, 400, "invalid_prompt"),
    ("inputs not an object", "POST", "/prompt", {"prompt": graph(lambda p: p["5"].update(inputs=[64, 64]))}, 400, "invalid_prompt"),
    ("steps is text", "POST", "/prompt", {"prompt": graph(lambda p: p["6"]["inputs"].update(steps="many"))}, 400, "prompt_outputs_failed_validation"),
    ("cfg is a boolean", "POST", "/prompt", {"prompt": graph(lambda p: p["6"]["inputs"].update(cfg=True))}, 400, "prompt_outputs_failed_validation"),
    ("steps below min", "POST", "/prompt", {"prompt": graph(lambda p: p["6"]["inputs"].update(steps=0))}, 400, "prompt_outputs_failed_validation"),
    ("sampler not in list", "POST", "/prompt", {"prompt": graph(lambda p: p["6"]["inputs"].update(sampler_name="nope"))}, 400, "prompt_outputs_failed_validation"),
    ("required input missing", "POST", "/prompt", {"prompt": graph(lambda p: p["6"]["inputs"].pop("seed"))}, 400, "prompt_outputs_failed_validation"),
    ("link to a missing node", "POST", "/prompt", {"prompt": graph(link_to_missing)}, 400, "prompt_outputs_failed_validation"),
    ("link to a missing output", "POST", "/prompt", {"prompt": graph(lambda p: p["7"]["inputs"].update(vae=["1", 7]))}, 400, "prompt_outputs_failed_validation"),
    ("link of the wrong type", "POST", "/prompt", {"prompt": graph(lambda p: p["7"]["inputs"].update(vae=["1", 1]))}, 400, "prompt_outputs_failed_validation"),
    ("dependency cycle", "POST", "/prompt", {"prompt": graph(cycle)}, 400, "prompt_outputs_failed_validation"),
    ("no output node", "POST", "/prompt", {"prompt": graph(lambda p: p.pop("8"))}, 400, "prompt_no_outputs"),
    ("prefix leaves output", "POST", "/prompt", {"prompt": graph(lambda p: p["8"]["inputs"].update(filename_prefix="../x"))}, 400, "prompt_outputs_failed_validation"),
    ("width not a multiple of 8", "POST", "/prompt", {"prompt": graph(lambda p: p["5"]["inputs"].update(width=65))}, 400, "prompt_outputs_failed_validation"),
    ("number is text", "POST", "/prompt", prompt_body(number="first"), 400, "invalid_prompt"),
    ("number is NaN", "POST", "/prompt", b'{"number": NaN, "prompt": {"1": {}}}', 400, "invalid_prompt"),
    ("prompt_id is an object", "POST", "/prompt", prompt_body(prompt_id={"a": 1}), 400, "invalid_prompt"),
    ("prompt_id too long", "POST", "/prompt", prompt_body(prompt_id="x" * 500), 400, "invalid_prompt"),
    ("prompt_id already used", "POST", "/prompt", prompt_body(prompt_id="taken"), 400, "duplicate_prompt_id"),
    ("client_id is a list", "POST", "/prompt", prompt_body(client_id=["a"]), 400, "invalid_prompt"),
    ("extra_data is a list", "POST", "/prompt", prompt_body(extra_data=[1]), 400, "invalid_json"),
    ("partial execution", "POST", "/prompt", prompt_body(partial_execution_targets=["8"]), 400, "unsupported"),
    ("oversized body", "POST", "/prompt", b'{"prompt": "' + b"x" * int(MAX_BODY_MB * 2**20) + b'"}', 413, "body_too_large"),
    ("deep nesting", "POST", "/prompt", {"prompt": json.loads(nested(80))}, 400, "too_deep"),
    ("very deep nesting", "POST", "/prompt", nested(100000).encode(), 400, "too_deep"),
    ("integer of 5000 digits", "POST", "/prompt", b'{"number": ' + b"9" * 5000 + b"}", 400, "invalid_json"),
    ("queue delete not a list", "POST", "/queue", {"delete": "abc"}, 400, "invalid_json"),
    ("queue body malformed", "POST", "/queue", b"clear", 400, "invalid_json"),
    ("history delete of objects", "POST", "/history", {"delete": [{"a": 1}]}, 400, "invalid_prompt"),
    ("history max_items text", "GET", "/history?max_items=all", None, 400, "invalid_query"),
    ("history offset text", "GET", "/history?offset=x", None, 400, "invalid_query"),
    ("view without filename", "GET", "/view", None, 400, "invalid_path"),
    ("view traversal", "GET", "/view?filename=../../etc/passwd", None, 400, "invalid_path"),
    ("view absolute", "GET", "/view?filename=/etc/passwd", None, 400, "invalid_path"),
    ("view NUL", "GET", "/view?filename=a%00.png", None, 400, "invalid_path"),
    ("view subfolder traversal", "GET", "/view?filename=passwd.png&subfolder=../..", None, 400, "invalid_path"),
    ("view subfolder absolute", "GET", "/view?filename=x.png&subfolder=/etc", None, 400, "invalid_path"),
    ("view Windows drive", "GET", "/view?filename=C:x.png", None, 400, "invalid_path"),
    ("view unknown type", "GET", "/view?filename=x.png&type=models", None, 400, "invalid_query"),
    ("view hidden database", "GET", "/view?filename=.sld-serve-history.sqlite3", None, 400, "invalid_path"),
    ("view non-image", "GET", "/view?filename=notes.txt", None, 400, "invalid_path"),
    ("view through a folder symlink", "GET", "/view?filename=secret.png&subfolder=escape", None, 403, "invalid_path"),
    ("view a file symlink", "GET", "/view?filename=leak.png", None, 403, "invalid_path"),
    ("view missing file", "GET", "/view?filename=nothing.png", None, 404, "not_found"),
    ("upload not an image", "POST", "/upload/image", upload(data=b"GIF89a but not really"), 400, "invalid_upload"),
    ("upload traversal", "POST", "/upload/image", upload("../up.png"), 400, "invalid_upload"),
    ("upload absolute", "POST", "/upload/image", upload("/tmp/up.png"), 400, "invalid_upload"),
    ("upload subfolder traversal", "POST", "/upload/image", upload(subfolder="../../x"), 400, "invalid_upload"),
    ("upload subfolder absolute", "POST", "/upload/image", upload(subfolder="/tmp"), 400, "invalid_upload"),
    ("upload malformed multipart", "POST", "/upload/image", (b"--x\r\nnothing", {"Content-Type": "multipart/form-data; boundary=y"}), 400, "invalid_upload"),
    ("upload not multipart", "POST", "/upload/image", {"image": "x"}, 400, "invalid_upload"),
    ("upload without image field", "POST", "/upload/image", multipart({"subfolder": ""}, {"file": ("a.png", png_bytes())}), 400, "invalid_upload"),
    ("upload too large", "POST", "/upload/image", upload(data=png_bytes() + b"\0" * int(MAX_UPLOAD_MB * 2**20)), 413, None),
    ("upload to output", "POST", "/upload/image", upload(type="output"), 400, "invalid_upload"),
    ("upload non-image name", "POST", "/upload/image", upload("up.txt"), 400, "invalid_upload"),
    ("upload decompression bomb", "POST", "/upload/image", upload(data=png_bomb()), None, "invalid_upload"),
    ("unknown model folder", "GET", "/models/../../etc", None, 404, None),
    ("unknown route", "GET", "/api/nothing_here", None, 404, "http_error"),
    ("wrong method", "GET", "/interrupt", None, 405, "http_error"),
    ("WebSocket route without upgrade", "GET", "/ws", None, 400, None),
]


@pytest.mark.parametrize("name, method, path, body, status, error_type", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_in_comfyui_shape(srv, name, method, path, body, status, error_type):
    headers = {}
    if isinstance(body, tuple):
        (raw, headers) = body
    elif isinstance(body, bytes):
        raw = body
    else:
        raw = None if body is None else json.dumps(body).encode()
    got, document, _ = srv.request(method, path, raw=raw, headers=headers)
    assert_comfy_error(got, document, status)
    if error_type:
        assert document["error"]["type"] == error_type, document


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40


def test_validation_errors_name_node_input_and_expectation(srv):
    status, body, _ = srv.request("POST", "/prompt", {"prompt": graph(lambda p: p["6"]["inputs"].update(steps=0, cfg="x"))})
    assert_comfy_error(status, body, 400)
    [entry] = body["node_errors"].values()
    assert entry["class_type"] == "SLDKSampler" and entry["dependent_outputs"] == ["8"]
    named = {e["extra_info"]["input_name"]: e for e in entry["errors"]}
    assert set(named) == {"steps", "cfg"} and "min of 1" in named["steps"]["message"]


def test_uploads_land_inside_the_input_folder_and_feed_load_image(srv):
    for _ in range(2):  # the same bytes twice are one file, as in ComfyUI
        raw, headers = upload("mine.png", subfolder="a/b")
        status, body, _ = srv.request("POST", "/upload/image", raw=raw, headers=headers)
        assert status == 200 and body == {"name": "mine.png", "subfolder": "a/b", "type": "input"}
    different = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(different, format="PNG")
    raw, headers = upload("mine.png", data=different.getvalue(), subfolder="a/b")
    assert srv.request("POST", "/upload/image", raw=raw, headers=headers)[1]["name"] == "mine (1).png"
    assert (srv.input / "a" / "b" / "mine.png").read_bytes() == png_bytes()
    assert not [p for p in srv.input.rglob(".*")]  # no temporary left behind
    status, content, _ = srv.request("GET", "/view?filename=mine.png&subfolder=a/b&type=input")
    assert status == 200 and content == png_bytes()


def test_the_server_still_serves_after_all_of_it(srv):
    assert srv.request("GET", "/system_stats")[0] == 200
    assert srv.wait(srv.queue(quick(load_api("sld_txt2img"), steps=1, seed=5)))["status"]["completed"] is True
    assert srv.proc.poll() is None and "Traceback" not in srv.logs()
