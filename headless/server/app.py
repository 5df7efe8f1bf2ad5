"""The routes of `sld serve`: ComfyUI's HTTP API (server.py is the contract), each also under /api/.

Every refusal is a 4xx with ComfyUI's error document, `{"error": {"type", "message", "details",
"extra_info"}, "node_errors": {...}}`, never a traceback. The `guard` middleware runs first on every
request, WebSocket included: same-origin and loopback-Host checks (a web page cannot drive a local
server from another origin, nor through DNS rebinding), then the token when one is set.
"""
import asyncio
import base64
import binascii
import hmac
import logging
import math
import mimetypes
import sqlite3
import urllib.parse
import uuid
from dataclasses import dataclass

from aiohttp import web

from ...nodes import NODE_DISPLAY_NAME_MAPPINGS
from ...nodes.context import use_runtime
from ..errors import ValidationError, WorkflowError
from ..workflow import parse_workflow
from . import files, frontend, info
from .frontend import TOKEN_COOKIE
from .requests import Refusal, read_json
from .options import is_loopback

log = logging.getLogger(__name__)

SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")  # ComfyUI keeps these out of history
MAX_ID_LENGTH = 200


@dataclass
class State:
    executor: object
    queue: object
    worker: object
    history: object
    hub: object
    policy: object
    folders: dict  # "input" / "output" / "temp" -> Path
    token: str
    listen: str
    max_body: int
    max_upload: int
    version: str
    device: object
    number: int = 0  # the next queue number (ComfyUI's server.number)
    max_queue: int = 100
    frontend: object = None  # frontend.Frontend under --frontend: the web app and its routes


def error_document(type_, message, details="", node_errors=None, extra=None):
    return {"error": {"type": type_, "message": message, "details": details, "extra_info": extra or {}},
            "node_errors": node_errors or {}}


def refusal_response(error):
    return web.json_response(error_document(error.type, error.message, error.details, error.node_errors, error.extra),
                             status=error.status, headers=error.headers)


# --- middleware ---------------------------------------------------------------------------------------

def _token_offered(request):
    offered = []
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic":  # clients such as comfy-api-simplified: any user, the token as password
        try:
            offered.append(base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2])
        except (binascii.Error, UnicodeDecodeError):
            pass
    if "token" in request.query:  # browsers cannot set headers on a WebSocket or an <img>
        offered.append(request.query["token"])
    if TOKEN_COOKIE in request.cookies:  # set by the web app's page (--frontend) from ?token=
        offered.append(request.cookies[TOKEN_COOKIE])
    return offered


def _host_is_loopback(host):
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return is_loopback(name.strip("[]"))


def make_guard(state):
    @web.middleware
    async def guard(request, handler):
        try:
            origin = request.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc != request.host:
                raise Refusal(403, "forbidden_origin", "Cross-origin requests are refused",
                              f"Origin {origin!r} is not this server ({request.host})")
            if is_loopback(state.listen) and not _host_is_loopback(request.host or ""):
                raise Refusal(403, "forbidden_host", "This server only answers requests addressed to this machine",
                              f"Host {request.host!r} is not a loopback name or address")
            if state.token and not any(hmac.compare_digest(t.encode(), state.token.encode()) for t in _token_offered(request)):
                raise Refusal(401, "unauthorized", "A valid token is required",
                              "send Authorization: Bearer TOKEN (or HTTP Basic with the token as password, or ?token=)",
                              headers={"WWW-Authenticate": 'Bearer realm="sld serve"'})
            return await handler(request)
        except Refusal as error:
            return refusal_response(error)
        except web.HTTPRequestEntityTooLarge as error:
            return refusal_response(Refusal(413, "body_too_large", "Request body too large", error.text or ""))
        except web.HTTPException as error:
            if 400 <= error.status < 500:
                return refusal_response(Refusal(error.status, "http_error", error.reason, f"{request.method} {request.path}",
                                                headers={k: v for k, v in error.headers.items() if k == "Allow"}))
            raise
    return guard


# --- request helpers ------------------------------------------------------------------------------------

def _object(data, what):
    if not isinstance(data, dict):
        raise Refusal(400, "invalid_json", f"{what} must be a JSON object", f"got {type(data).__name__}")
    return data


def _id_text(value, what):
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value) or \
            len(str(value)) > MAX_ID_LENGTH or not str(value).isprintable():
        raise Refusal(400, "invalid_prompt", f"{what} must be printable text of at most {MAX_ID_LENGTH} characters",
                      f"{what}: {files_shown(value)}")
    return str(value)


def files_shown(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _int_query(request, name, default):
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise Refusal(400, "invalid_query", f"{name} must be an integer", f"{name}={files_shown(raw)}") from None


def validation_refusal(report):
    """ComfyUI answers a missing class_type or unknown node with that error on top; others as reported."""
    node_errors = report["node_errors"]
    first = next((e for entry in node_errors.values() for e in entry["errors"] if e["type"] == "invalid_prompt"), None)
    top = report["error"] if first is None else {"type": "invalid_prompt", "message": first["message"],
                                                  "details": first["details"], "extra_info": {}}
    return Refusal(400, top["type"], top["message"], top.get("details", ""), node_errors, extra=top.get("extra_info"))


# --- routes ------------------------------------------------------------------------------------------------

def build_app(state):
    registry = state.executor.registry
    routes = []

    def route(method, path):
        def add(handler):
            routes.append((method, path, handler))
            return handler
        return add

    async def in_thread(function, *args):
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    @route("GET", "/")
    async def root(request):
        if state.frontend:
            return state.frontend.index(request, state.token)
        return web.json_response({"server": "sld serve", "version": state.version, "api": "ComfyUI",
                                  "web_ui": False, "policy": state.policy.describe()})

    @route("POST", "/prompt")
    async def post_prompt(request):
        data = _object(await read_json(request, state), "The request body")
        if state.queue.full():
            raise _queue_full(state)
        if "number" in data:
            try:
                number = float(data["number"])
            except (TypeError, ValueError, OverflowError):
                number = math.nan
            if not math.isfinite(number):
                raise Refusal(400, "invalid_prompt", "number must be a finite number", f"number: {files_shown(data['number'])}")
        else:
            number = state.number
            state.number += 1
            if data.get("front"):
                number = -number
        if "prompt" not in data:
            raise Refusal(400, "no_prompt", "No prompt provided", "No prompt provided")
        prompt = data["prompt"]
        if not isinstance(prompt, dict) or not prompt:
            raise Refusal(400, "invalid_prompt", "prompt must be an object {node_id: {class_type, inputs}}",
                          f"prompt: {files_shown(prompt)}")
        prompt_id = _id_text(data["prompt_id"], "prompt_id") if "prompt_id" in data else str(uuid.uuid4())
        extra = dict(_object(data.get("extra_data", {}), "extra_data"))
        if "client_id" in data:
            extra["client_id"] = _id_text(data["client_id"], "client_id")
        for key in SENSITIVE_EXTRA_DATA:
            extra.pop(key, None)
        if data.get("partial_execution_targets") is not None:
            raise Refusal(400, "unsupported", "partial_execution_targets is not supported by sld serve",
                          "queue the whole prompt; every output node runs")
        if await in_thread(state.history.known, prompt_id):
            raise Refusal(400, "duplicate_prompt_id", "prompt_id already used", f"prompt_id {prompt_id!r} is queued or in the history")
        try:
            workflow = parse_workflow({"prompt": prompt, "extra_data": extra}, registry, "POST /prompt")
            validated, outputs = await in_thread(state.executor.validate, workflow.prompt)
        except WorkflowError as error:
            raise Refusal(400, "invalid_prompt", error.message, str(error)) from None
        except ValidationError as error:
            raise validation_refusal(error.report) from None
        violations = state.policy.violations(validated, outputs, registry)
        if violations:
            details = "\n".join(e["details"] for entry in violations.values() for e in entry["errors"])
            raise Refusal(400, "prompt_outputs_failed_validation", "Prompt refused by the server's safety policy",
                          details, violations, extra={"policy": state.policy.describe()})
        item = [number, prompt_id, workflow.prompt, extra, outputs]
        try:
            if not await in_thread(state.queue.put, item):
                raise _queue_full(state)
        except sqlite3.IntegrityError:  # the same prompt_id posted twice at once
            raise Refusal(400, "duplicate_prompt_id", "prompt_id already used", f"prompt_id {prompt_id!r}") from None
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

    @route("GET", "/prompt")
    async def get_prompt(request):
        return web.json_response(state.queue.status())

    @route("GET", "/queue")
    async def get_queue(request):
        running, pending = state.queue.snapshot()
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def clear_or_delete(request, remove):
        """ComfyUI's body for POST /queue and /history: {"clear": true} and/or {"delete": [ids]}."""
        data = _object(await read_json(request, state), "The request body")
        if data.get("clear"):
            await in_thread(remove, None)
        if "delete" in data:
            await in_thread(remove, set(_id_list(data["delete"])))
        return web.Response(status=200)

    @route("POST", "/queue")
    async def post_queue(request):
        return await clear_or_delete(request, state.queue.remove)

    @route("POST", "/interrupt")
    async def post_interrupt(request):
        try:
            data = await read_json(request, state, required=False)
        except Refusal as error:
            if error.type != "invalid_json":
                raise
            data = {}  # ComfyUI: a body that is not JSON means "interrupt whatever runs"
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        state.worker.interrupt(_id_text(prompt_id, "prompt_id") if prompt_id else None)
        return web.Response(status=200)

    @route("POST", "/free")
    async def post_free(request):
        data = _object(await read_json(request, state), "The request body")
        if data.get("unload_models") or data.get("free_memory"):
            state.worker.free_requested = True  # the cache is dropped after the current prompt
        return web.Response(status=200)

    @route("GET", "/history")
    async def get_history(request):
        max_items = _int_query(request, "max_items", None)
        if max_items is not None and max_items < 0:
            raise Refusal(400, "invalid_query", "max_items must be ≥ 0", f"max_items={max_items}")
        offset = _int_query(request, "offset", -1)
        return web.json_response(await in_thread(lambda: state.history.entries(max_items=max_items, offset=offset)))

    @route("GET", "/history/{prompt_id}")
    async def get_history_one(request):
        prompt_id = request.match_info["prompt_id"]
        return web.json_response(await in_thread(lambda: state.history.entries(prompt_id=prompt_id)))

    @route("POST", "/history")
    async def post_history(request):
        return await clear_or_delete(request, state.history.delete)

    @route("GET", "/view")
    async def view(request):
        query = request.query
        filename = query.get("filename")
        type_ = query.get("type", "output")
        for annotated in ("output", "input", "temp"):  # ComfyUI's "name.png [output]"
            if filename and filename.endswith(f" [{annotated}]"):
                filename, type_ = filename[:-len(annotated) - 3], annotated
        if type_ not in state.folders:
            raise Refusal(400, "invalid_query", "type must be output, input or temp", f"type={files_shown(type_)}")
        try:
            files.check_filename(filename)
            path = files.inside(state.folders[type_], query.get("subfolder", ""), filename)
        except files.Refused as error:
            raise Refusal(error.status, "invalid_path", error.message, f"filename={files_shown(filename)}") from None
        if state.policy.require_checker:
            subfolder = "/".join(files.split_subfolder(query.get("subfolder", "")))
            if type_ == "input" or not await in_thread(state.history.file_checked, type_, subfolder, filename):
                raise Refusal(403, "policy_violation", "Only images that passed the safety checker are served",
                              f"this server runs with --require-checker {state.policy.require_checker}; "
                              f"{type_}/{subfolder + '/' if subfolder else ''}{filename} was not written by a checked prompt")
        if not path.is_file():
            raise Refusal(404, "not_found", "No such image", f"{type_}: {files_shown(filename)}")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={"Content-Type": content_type, "Content-Disposition":
                                               f"inline; filename*=UTF-8''{urllib.parse.quote(path.name)}"})

    @route("POST", "/upload/image")
    async def upload_image(request):
        if not request.content_type.startswith("multipart/"):
            raise Refusal(400, "invalid_upload", "Upload must be multipart/form-data with an 'image' file field",
                          f"Content-Type {request.content_type!r}")
        try:
            form = await request.post()
        except ValueError as error:  # aiohttp's word for a malformed multipart body
            raise Refusal(400, "invalid_upload", "Malformed multipart/form-data body", str(error)) from None
        image = form.get("image")
        if not isinstance(image, web.FileField):
            raise Refusal(400, "invalid_upload", "No 'image' file field in the upload", "")
        data = image.file.read(state.max_upload + 1)
        if len(data) > state.max_upload:
            raise Refusal(413, "upload_too_large", "Upload too large", f"at most {state.max_upload} bytes (--max-upload-mb)")
        type_ = form.get("type") or "input"
        if type_ != "input":
            raise Refusal(400, "invalid_upload", "Uploads go to the input folder only", f"type={files_shown(type_)}")
        subfolder = form.get("subfolder") or ""
        if not isinstance(subfolder, str):
            raise Refusal(400, "invalid_upload", "subfolder must be text", "")
        try:
            files.check_filename(image.filename)
            files.inside(state.folders["input"], subfolder, image.filename)
            await in_thread(files.check_image, data)
            name = await in_thread(files.save_upload, state.folders["input"], subfolder, image.filename, data,
                                   form.get("overwrite") in ("true", "1"))
        except files.Refused as error:
            raise Refusal(error.status, "invalid_upload", error.message, f"filename={files_shown(image.filename)}") from None
        return web.json_response({"name": name, "subfolder": subfolder, "type": "input"})

    def describe_nodes(names):
        out = {}
        with use_runtime(state.executor.runtime):
            for name in names:
                try:
                    out[name] = info.node_info(name, registry[name], NODE_DISPLAY_NAME_MAPPINGS)
                except Exception as error:  # one unreadable node must not hide the others
                    log.warning("object_info: %s could not be described: %s", name, error)
        return out

    @route("GET", "/object_info")
    async def object_info(request):
        return web.json_response(await in_thread(describe_nodes, list(registry)))

    @route("GET", "/object_info/{node_class}")
    async def object_info_one(request):
        name = request.match_info["node_class"]
        return web.json_response(await in_thread(describe_nodes, [name]) if name in registry else {})

    @route("GET", "/system_stats")
    async def system_stats(request):
        return web.json_response(info.system_stats(state.device, state.version, state.policy))

    @route("GET", "/features")
    async def features(request):
        return web.json_response(info.features(state.max_upload, state.policy))

    @route("GET", "/models")
    async def models(request):
        return web.json_response(sorted(state.executor.runtime.models.roots))

    @route("GET", "/models/{folder}")
    async def models_in(request):
        folder = request.match_info["folder"]
        if folder not in state.executor.runtime.models.roots:
            raise Refusal(404, "not_found", "No such model folder", f"{files_shown(folder)}; see GET /models")
        return web.json_response(await in_thread(state.executor.runtime.models.names, folder))

    @route("GET", "/embeddings")
    async def embeddings(request):
        return web.json_response([])  # textual-inversion embeddings are not supported headless

    @route("GET", "/ws")
    async def websocket(request):
        # No heartbeat, as ComfyUI's server: websocket-client answers pings only while it reads, so a
        # ComfyUI script that waits between reads would be dropped by one.
        ws = web.WebSocketResponse(max_msg_size=64 * 1024)
        await ws.prepare(request)
        client_id = request.query.get("clientId", "")
        if not client_id or len(client_id) > MAX_ID_LENGTH or not client_id.isprintable():
            client_id = uuid.uuid4().hex
        first = [("status", {"status": state.queue.status(), "sid": client_id})]
        running_client, node = state.hub.current
        if running_client == client_id and node is not None:  # a reconnect mid-prompt learns where it is
            first.append(("executing", {"node": node}))
        await state.hub.serve(ws, client_id, first)
        return ws

    if state.frontend:
        routes.extend(frontend.routes(state))
    app = web.Application(middlewares=[make_guard(state)], client_max_size=max(state.max_body, state.max_upload) + 2**16)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    if state.frontend:
        state.frontend.add_static(app)
    return app


def _id_list(value):
    if not isinstance(value, list):
        raise Refusal(400, "invalid_json", "delete must be a list of prompt ids", f"delete: {files_shown(value)}")
    return [_id_text(v, "prompt id") for v in value]


def _queue_full(state):
    wait = max(1, math.ceil(state.worker.average_seconds or 1))
    return Refusal(503, "queue_full", "The queue is full",
                   f"{state.queue.max_pending} prompts are waiting (--max-queue); retry in about {wait} s",
                   headers={"Retry-After": str(wait)}, extra={"max_queue": state.queue.max_pending})


async def start_site(app, host, port):
    """Listen on host:port (0: a free port); returns (runner, the port bound)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, (runner.addresses[0][1] if runner.addresses else port)
