"""`sld serve --frontend`: ComfyUI's web app, from the `comfyui-frontend-package` wheel, and the routes
it calls besides the prompt API: settings, user data, users, extensions, i18n, workflow templates.

The wheel holds the built app in `comfyui_frontend_package/static/` (where ComfyUI's
frontend_management looks too). Routes answer as ComfyUI's user_manager, app_settings and
custom_node_manager do, so the page starts without an error in the browser console; there is one user
(ComfyUI without --multi-user). The shipped workflows are offered as this pack's templates.
"""
import asyncio
import collections
import hmac
import importlib.metadata
import importlib.util
import io
import logging
import re
import shutil
from datetime import datetime
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote

from aiohttp import web

from .requests import Refusal, read_json
from .userdata import Refused, UserData

log = logging.getLogger(__name__)

PACKAGE = "comfyui_frontend_package"
INSTALL_HINT = "pip install 'comfyui-sld[frontend]'"
PACK_NAME = "comfyui-sld"  # the name the templates dialog shows for our workflows
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"  # in a checkout and, as package data, installed
EXTENSIONS = Path(__file__).resolve().parent / "web"  # our own extension scripts for the web app
THUMBNAIL = re.compile(r"^(?P<stem>[^/\\]+?)(-\d+)?\.(jpg|jpeg|png|webp)$")
NO_CACHE = {"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"}
TOKEN_COOKIE = "sld_serve_token"  # set by `index` from /?token=, accepted by the server's guard


class FrontendMissing(Exception):
    pass


class LogBuffer(logging.Handler):
    """The server's recent log records, for the web app's logs panel (ComfyUI's /internal/logs). The
    panel shows them as they were when it opened: records are not streamed over the WebSocket."""

    def __init__(self, size=1000):
        super().__init__(logging.INFO)
        self.entries = collections.deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.entries.append({"t": datetime.fromtimestamp(record.created).isoformat(), "m": self.format(record) + "\n"})


def find_web_root():
    """The web app's folder inside the installed wheel; `FrontendMissing` (one line, how to install) if none."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / "static" / "index.html").is_file():
            return Path(location) / "static"
    if not locations:
        raise FrontendMissing(f"--frontend needs ComfyUI's web app (comfyui-frontend-package): {INSTALL_HINT}")
    raise FrontendMissing(f"--frontend: {PACKAGE} at {locations[0]} has no static/index.html; reinstall it: "
                          f"{INSTALL_HINT}")


@dataclass
class Frontend:
    web_root: Path
    user: UserData
    logs: LogBuffer
    workflows: Path = WORKFLOWS

    @classmethod
    def open(cls, web_root, output_dir):
        logs = LogBuffer()
        logging.getLogger(__name__.split(".")[0]).addHandler(logs)  # every logger of this package
        log.info("web app: comfyui-frontend-package %s from %s", _version(), web_root)
        return cls(Path(web_root), UserData(output_dir), logs)

    def index(self, request, token):
        """The page. On a server with a token, opening /?token=TOKEN keeps the token in a cookie
        (HttpOnly, SameSite=Strict: never sent by another site's page) and reloads without it, so the
        app's own requests and its WebSocket carry it and the address bar does not."""
        offered = request.query.get("token")
        if token and offered is not None and hmac.compare_digest(offered.encode(), token.encode()):
            response = web.Response(status=303, headers={"Location": request.path, **NO_CACHE})
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/", secure=request.secure)
            return response
        return web.FileResponse(self.web_root / "index.html", headers=NO_CACHE)

    def extensions(self):
        """The web app's own extension scripts, then ours (served under /extensions/comfyui-sld/)."""
        folder = self.web_root / "extensions"
        core = sorted("/" + p.relative_to(self.web_root).as_posix() for p in folder.rglob("*.js"))
        return core + [f"/extensions/{PACK_NAME}/{p.name}" for p in sorted(EXTENSIONS.glob("*.js"))]

    def templates(self):
        """The shipped UI-format workflows (top level of workflows/, as ComfyUI lists a pack's)."""
        return sorted(p.stem for p in self.workflows.glob("*.json")) if self.workflows.is_dir() else []

    def add_static(self, app):
        """Last: everything no route matched is a file of the web app (aiohttp keeps it inside the folder)."""
        app.router.add_static("/", self.web_root)


def routes(state):
    """(method, path, handler) of every route the web app needs besides the API (app.py adds /api/ twins)."""

    frontend = state.frontend
    user = frontend.user

    async def run(function, *args):
        try:
            return await _in_thread(function, *args)
        except Refused as error:
            raise Refusal(error.status, "invalid_user_data", error.message, "") from None

    def flag(request, name, default):
        return request.query.get(name, default).lower() == "true"

    async def get_settings(request):
        return web.json_response(await run(user.settings))

    async def get_setting(request):
        return web.json_response((await run(user.settings)).get(request.match_info["id"]))

    async def post_settings(request):
        values = await read_json(request, state)
        if not isinstance(values, dict):
            raise Refusal(400, "invalid_json", "Settings must be a JSON object", f"got {type(values).__name__}")
        await run(user.update_settings, values)
        return web.Response(status=200)

    async def post_setting(request):
        # the app "stores" undefined (an empty body) to remove a setting; ComfyUI would fail on it
        value = await read_json(request, state) if (await request.read()).strip() else None
        await run(user.update_settings, {request.match_info["id"]: value})
        return web.Response(status=200)

    async def get_users(request):
        return web.json_response({"storage": "server", "migrated": True})  # one user; its folder always exists

    async def post_users(request):
        raise Refusal(400, "single_user", "sld serve has one user", "user profiles (ComfyUI's --multi-user) are not supported")

    async def list_userdata(request):
        directory = request.query.get("dir", "")
        if not directory:
            raise Refusal(400, "invalid_query", "Directory not provided", "GET /userdata?dir=FOLDER")
        return web.json_response(await run(user.listing, directory, flag(request, "recurse", ""),
                                           flag(request, "full_info", ""), flag(request, "split", "")))

    async def list_userdata_v2(request):
        return web.json_response(await run(user.listing_v2, request.query.get("path", "")))

    async def get_userdata(request):
        return web.FileResponse(await run(user.read, _file_param(request, "file")))

    async def post_userdata(request):
        body = await request.read()
        if len(body) > state.max_body:
            raise Refusal(413, "body_too_large", "Request body too large", f"at most {state.max_body} bytes (--max-body-mb)")
        path = await run(user.write, _file_param(request, "file"), body, flag(request, "overwrite", "true"))
        return web.json_response(user.info(path, flag(request, "full_info", "false")))

    async def delete_userdata(request):
        await run(user.delete, _file_param(request, "file"))
        return web.Response(status=204)

    async def move_userdata(request):
        path = await run(user.move, _file_param(request, "file"), _file_param(request, "dest"),
                         flag(request, "overwrite", "true"))
        return web.json_response(user.info(path, flag(request, "full_info", "false")))

    async def extensions(request):
        return web.json_response(await _in_thread(frontend.extensions))

    async def i18n(request):
        return web.json_response({})  # our node names and tooltips are English only

    async def workflow_templates(request):
        names = await _in_thread(frontend.templates)
        return web.json_response({PACK_NAME: names} if names else {})

    async def workflow_template(request):
        """A template, or its thumbnail: the templates dialog asks for NAME.jpg, which we do not ship, so
        a plain placeholder answers for a template that exists (rather than a 404 per card)."""
        name = request.match_info["name"]
        names = await _in_thread(frontend.templates)
        if name.endswith(".json") and name[:-5] in names:
            return web.FileResponse(frontend.workflows / name)
        thumbnail = THUMBNAIL.match(name)
        if thumbnail and thumbnail.group("stem") in names:
            if (frontend.workflows / name).is_file():
                return web.FileResponse(frontend.workflows / name)
            return web.Response(body=_placeholder(), content_type="image/jpeg")
        raise Refusal(404, "not_found", "No such workflow template", f"{PACK_NAME}/{name}")

    async def our_extension(request):
        name = request.match_info["name"]
        if name not in {p.name for p in EXTENSIONS.glob("*.js")}:
            raise Refusal(404, "not_found", "No such extension script", f"{PACK_NAME}/{name}")
        return web.FileResponse(EXTENSIONS / name, headers={"Content-Type": "text/javascript"})

    async def favicon(request):
        """The web app has no favicon.ico; a browser asks for one anyway. No content, rather than a 404."""
        path = frontend.web_root / "favicon.ico"
        return web.FileResponse(path) if path.is_file() else web.Response(status=204)

    async def user_css(request):
        return web.FileResponse(await run(user.read, "user.css"), headers={"Content-Type": "text/css"})

    models = state.executor.runtime.models

    async def model_folders(request):
        """ComfyUI's model library listing: each model kind with its folders."""
        return web.json_response([{"name": kind, "folders": [str(p) for p in paths]}
                                  for kind, paths in sorted(models.roots.items())])

    async def model_files(request):
        kind = request.match_info["folder"]
        if kind not in models.roots:
            raise Refusal(404, "not_found", "No such model folder", f"{kind}; see GET /experiment/models")
        return web.json_response([{"name": name, "pathIndex": 0} for name in await _in_thread(models.names, kind)])

    async def logs(request):
        return web.json_response("".join(f"{e['t']} - {e['m']}" for e in list(frontend.logs.entries)))

    async def raw_logs(request):
        cols, rows = shutil.get_terminal_size((120, 30))
        return web.json_response({"entries": list(frontend.logs.entries), "size": {"cols": cols, "rows": rows}})

    async def subscribe_logs(request):
        await read_json(request, state)  # {"enabled", "clientId"}: accepted; records are not streamed
        return web.Response(status=200)

    async def folder_paths(request):
        return web.json_response({kind: [str(p) for p in paths] for kind, paths in sorted(models.roots.items())})

    async def core_templates(request):
        return web.json_response([])  # ComfyUI's own templates (comfyui-workflow-templates) are not shipped

    return [
        ("GET", "/settings", get_settings), ("GET", "/settings/{id}", get_setting),
        ("POST", "/settings", post_settings), ("POST", "/settings/{id}", post_setting),
        ("GET", "/users", get_users), ("POST", "/users", post_users),
        ("GET", "/userdata", list_userdata), ("GET", "/v2/userdata", list_userdata_v2),
        ("GET", "/userdata/{file}", get_userdata), ("POST", "/userdata/{file}", post_userdata),
        ("DELETE", "/userdata/{file}", delete_userdata), ("POST", "/userdata/{file}/move/{dest}", move_userdata),
        ("GET", "/extensions", extensions), ("GET", "/i18n", i18n),
        ("GET", "/workflow_templates", workflow_templates),
        ("GET", f"/workflow_templates/{PACK_NAME}/{{name}}", workflow_template),
        ("GET", "/templates/index.json", core_templates),
        ("GET", f"/extensions/{PACK_NAME}/{{name}}", our_extension), ("GET", "/user.css", user_css),
        ("GET", "/favicon.ico", favicon),
        ("GET", "/experiment/models", model_folders), ("GET", "/experiment/models/{folder}", model_files),
        ("GET", "/internal/logs", logs), ("GET", "/internal/logs/raw", raw_logs),
        ("PATCH", "/internal/logs/subscribe", subscribe_logs), ("GET", "/internal/folder_paths", folder_paths),
    ]


def _file_param(request, name):
    """A path segment as the web app sends it: one segment with its slashes percent-encoded."""
    value = request.match_info[name]
    return unquote(value) if "%" in value else value


def _version():
    try:
        return importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


async def _in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


@lru_cache(maxsize=1)
def _placeholder():
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (38, 38, 38)).save(out, format="JPEG")
    return out.getvalue()
