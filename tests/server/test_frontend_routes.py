"""`sld serve --frontend` without a browser: the one-line refusal when the web app is not installed,
the user-data folder that never lets a path out, the routes the web app calls at start-up, and the
token kept in a cookie for the page (tests/server/test_frontend_browser.py drives the real app)."""
import importlib.util
import json
import os
import urllib.parse

import pytest

from comfyui_sld.headless.cli import main as sld
from comfyui_sld.headless.server.userdata import FIRST_FILES, FOLDER, Refused, UserData

from .conftest import Server, assert_comfy_error

has_frontend = importlib.util.find_spec("comfyui_frontend_package") is not None
needs_frontend = pytest.mark.skipif(not has_frontend, reason="comfyui-frontend-package is not installed")
TOKEN = "frontend-test-token"


def test_without_the_wheel_frontend_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "comfyui_frontend_package" else real(name, *a))
    out = tmp_path / "out"
    code = sld(["serve", "--frontend", "--port", "0", "--output-dir", str(out), "--input-dir", str(tmp_path / "in")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "pip install 'comfyui-sld[frontend]'" in err and err.startswith("error: --frontend")
    assert not out.exists()  # refused before anything was made or loaded


# --- the user folder ------------------------------------------------------------------------------

@pytest.fixture
def user(tmp_path):
    return UserData(tmp_path / "output")


@pytest.mark.parametrize("path", ["../x.json", "a/../../x.json", "..", "/etc/passwd", "\\\\server\\share\\x",
                                  "C:\\x.json", "c:x.json", "a\0b.json", "", "/", "./x.json", "a/./b"])
def test_user_paths_that_could_leave_the_folder_are_refused(user, path):
    with pytest.raises(Refused) as refused:
        user.write(path, b"{}")
    assert refused.value.status in (400, 403)
    made = {(user.base / name).resolve() for name in FIRST_FILES}
    assert [p for p in user.base.parents[2].rglob("*") if p.is_file() and p.resolve() not in made] == []


def test_a_symlink_out_of_the_user_folder_is_neither_followed_nor_listed(user, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    os.symlink(outside, user.base / "workflows" / "link")
    for call in (lambda: user.read("workflows/link/secret.json"), lambda: user.write("workflows/link/new.json", b"1"),
                 lambda: user.listing("workflows/link")):
        with pytest.raises(Refused) as refused:
            call()
        assert refused.value.status == 403
    assert user.listing("workflows", recurse=True) == []
    assert all("secret" not in e["path"] for e in user.listing_v2())
    assert sorted(p.name for p in outside.iterdir()) == ["secret.json"]


def test_user_files_write_list_move_delete_and_settings_merge(user):
    assert user.base == (user.base.parents[2] / "output" / FOLDER / "default").resolve()
    assert user.write("workflows/a b.json", b'{"x": 1}').read_bytes() == b'{"x": 1}'
    with pytest.raises(Refused) as exists:
        user.write("workflows/a b.json", b"{}", overwrite=False)
    assert exists.value.status == 409
    assert user.listing("workflows") == ["a b.json"]
    assert user.listing("workflows", split=True) == [["a b.json", "a b.json"]]
    assert user.listing("workflows", full_info=True)[0]["size"] == 8
    user.move("workflows/a b.json", "workflows/sub/c.json")
    assert user.listing("workflows", recurse=True) == ["sub/c.json"]
    v2 = user.listing_v2()
    assert [e["path"] for e in v2 if e["type"] == "directory"] == ["workflows/sub", "subgraphs", "workflows"]  # by name
    assert [e["type"] for e in v2] == ["directory"] * 3 + ["file"] * (len(v2) - 3)  # folders first, as ComfyUI
    user.delete("workflows/sub/c.json")
    with pytest.raises(Refused):
        user.read("workflows/sub/c.json")
    user.update_settings({"Comfy.A": 1})
    user.update_settings({"Comfy.B": [2]})
    assert {k: v for k, v in user.settings().items() if k.startswith("Comfy.A") or k.startswith("Comfy.B")} == \
        {"Comfy.A": 1, "Comfy.B": [2]}
    user.update_settings({"Comfy.A": None})  # removed: the app's default applies again
    assert "Comfy.A" not in user.settings() and user.settings()["Comfy.B"] == [2]
    assert not [p for p in user.base.rglob("*.tmp")]


# --- the routes, on a running server ----------------------------------------------------------------

@pytest.fixture(scope="module")
def web(tmp_path_factory):
    if not has_frontend:
        pytest.skip("comfyui-frontend-package is not installed")
    tmp = tmp_path_factory.mktemp("frontend")
    (tmp / "models" / "checkpoints").mkdir(parents=True)
    (tmp / "models" / "checkpoints" / "listed.safetensors").write_bytes(b"")  # listed, never loaded
    srv = Server(tmp, "--frontend", "--models-dir", str(tmp / "models"))
    yield srv
    srv.stop()


@needs_frontend
def test_the_page_and_its_start_up_routes(web):
    status, page, head = web.request("GET", "/")
    assert status == 200 and b'<div id="vue-app"' in page and head["Cache-Control"] == "no-cache"
    assert web.request("GET", "/assets/does-not-exist.js")[0] == 404
    status, extensions, _ = web.request("GET", "/api/extensions")
    assert "/extensions/comfyui-sld/sld_serve.js" in extensions
    assert all(web.request("GET", e)[0] == 200 for e in extensions)
    assert web.request("GET", "/api/users")[1] == {"storage": "server", "migrated": True}
    assert web.request("GET", "/api/i18n")[1] == {}
    templates = web.request("GET", "/api/workflow_templates")[1]["comfyui-sld"]
    assert "sld_txt2img" in templates
    status, shipped, _ = web.request("GET", "/api/workflow_templates/comfyui-sld/sld_txt2img.json")
    assert status == 200 and shipped["nodes"]
    assert web.request("GET", "/api/workflow_templates/comfyui-sld/sld_txt2img.jpg")[2]["Content-Type"] == "image/jpeg"
    assert_comfy_error(*web.request("GET", "/api/workflow_templates/comfyui-sld/nothing.json")[:2], 404)
    kinds = web.request("GET", "/api/experiment/models")[1]
    assert "checkpoints" in [k["name"] for k in kinds]
    assert web.request("GET", "/api/experiment/models/checkpoints")[1] == [{"name": "listed.safetensors", "pathIndex": 0}]
    assert "--disable-api-nodes" in web.request("GET", "/api/system_stats")[1]["system"]["argv"]
    raw = web.request("GET", "/internal/logs/raw")[1]
    assert any("comfyui-frontend-package" in e["m"] for e in raw["entries"]) and raw["size"]["cols"] > 0
    assert web.request("PATCH", "/internal/logs/subscribe", {"enabled": True, "clientId": "x"})[0] == 200
    assert "checkpoints" in web.request("GET", "/internal/folder_paths")[1]
    assert web.request("GET", "/api/userdata/workflows%2F.index.json")[1] == {"favorites": []}
    assert web.request("GET", "/api/userdata?dir=workflows")[1] == []  # hidden files are not workflows


@needs_frontend
def test_settings_and_user_data_over_http_stay_in_the_user_folder(web):
    assert web.request("POST", "/api/settings/Comfy.Test", 5)[0] == 200
    assert web.request("POST", "/api/settings", {"Comfy.Other": "x"})[0] == 200
    assert web.request("GET", "/api/settings/Comfy.Test")[1] == 5
    assert web.request("GET", "/api/settings")[1]["Comfy.Other"] == "x"
    assert web.request("POST", "/api/settings/Comfy.Other", raw=b"")[0] == 200  # the app's storeSetting(id, undefined)
    assert "Comfy.Other" not in web.request("GET", "/api/settings")[1]
    name = urllib.parse.quote("workflows/my flow.json", safe="")
    status, body, _ = web.request("POST", f"/api/userdata/{name}?overwrite=false&full_info=true", raw=b'{"nodes": []}')
    assert status == 200 and body["path"] == "workflows/my flow.json"
    assert web.request("GET", f"/api/userdata/{name}")[1] == {"nodes": []}
    assert web.request("GET", "/api/userdata?dir=workflows")[1] == ["my flow.json"]
    assert_comfy_error(*web.request("POST", f"/api/userdata/{name}?overwrite=false", raw=b"{}")[:2], 409)
    for bad in ("..%2F..%2Fhistory.json", "%2Fetc%2Fpasswd", "a%00b", "..%5C..%5Cx.json"):
        assert_comfy_error(*web.request("POST", f"/api/userdata/{bad}", raw=b"{}")[:2])
        assert_comfy_error(*web.request("GET", f"/api/userdata/{bad}")[:2])
    assert_comfy_error(*web.request("GET", "/api/userdata?dir=..")[:2])
    assert_comfy_error(*web.request("GET", "/api/v2/userdata?path=..%2F..")[:2])
    assert_comfy_error(*web.request("POST", "/api/users", {"username": "x"})[:2], 400)
    written = sorted(p.relative_to(web.output).as_posix() for p in web.output.rglob("*") if p.is_file())
    assert all(p.startswith(f"{FOLDER}/default/") or p.startswith(".sld-serve-history") for p in written), written
    assert f"{FOLDER}/default/workflows/my flow.json" in written
    assert_comfy_error(*web.request("GET", f"/view?filename=comfy.settings.json&subfolder={FOLDER}/default")[:2])


@needs_frontend
def test_with_a_token_the_page_keeps_it_in_a_cookie(tmp_path):
    srv = Server(tmp_path, "--frontend", "--auth-token", TOKEN)
    try:
        import urllib.request

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args):
                return None

        opener = urllib.request.build_opener(NoRedirect)
        assert srv.request("GET", "/")[0] == 401
        try:
            opener.open(f"{srv.url}/?token=wrong")
            raise AssertionError("a wrong token was accepted")
        except urllib.error.HTTPError as error:
            assert error.code == 401 and "Set-Cookie" not in error.headers
        try:
            opener.open(f"{srv.url}/?token={TOKEN}")
            raise AssertionError("no redirect")
        except urllib.error.HTTPError as error:
            assert error.code == 303 and error.headers["Location"] == "/"
            cookie = error.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        pair = cookie.split(";")[0]
        assert srv.request("GET", "/api/settings", headers={"Cookie": pair})[0] == 200
        assert srv.request("GET", "/", headers={"Cookie": pair})[0] == 200
        assert srv.request("GET", "/api/settings", headers={"Cookie": "sld_serve_token=wrong"})[0] == 401
        assert srv.request("GET", "/api/settings", headers={"Cookie": pair, "Origin": "http://evil.example"})[0] == 403
    finally:
        srv.stop()
