"""Start-up and shutdown of `sld serve`: refuse an unsafe configuration before anything listens, open
the history (closing what a dead server left open), then serve until SIGINT/SIGTERM.

On shutdown the running prompt is interrupted (it is recorded as interrupted) and the worker joined;
prompts still waiting stay queued in the database and are reported failed by the next start.
"""
import asyncio
import importlib.util
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from ...sld_core.errors import InvalidInputError
from .options import AUTH_TOKEN_ENV, is_loopback

log = logging.getLogger("comfyui_sld.serve")
STALE_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # nodes/png.write_png's and files.save_upload's


def serve(args, version):
    """Run the server; returns the exit code (2: refused to start)."""
    if importlib.util.find_spec("aiohttp") is None:  # imported by .app only
        return _refuse("sld serve needs aiohttp: pip install 'comfyui-sld[serve]'")
    token = args.auth_token or os.environ.get(AUTH_TOKEN_ENV) or ""
    if not is_loopback(args.listen) and not token and not args.insecure:
        return _refuse(f"--listen {args.listen} would let anyone who can reach this machine run prompts and read "
                       f"images; set --auth-token TOKEN (or ${AUTH_TOKEN_ENV}), or pass --insecure to allow it")
    if args.max_queue < 1 or args.max_upload_mb <= 0 or args.max_body_mb <= 0:
        return _refuse("--max-queue, --max-upload-mb and --max-body-mb must be positive")
    web_root = None
    if args.frontend:
        from .frontend import FrontendMissing, find_web_root
        try:
            web_root = find_web_root()
        except FrontendMissing as error:
            return _refuse(str(error))
    from .policy import resolve_policy  # torch-free: a bad policy file is refused before anything loads

    try:
        state = _prepare(args, token, version, *resolve_policy(args))
    except InvalidInputError as error:
        return _refuse(str(error))
    if web_root:
        from .frontend import Frontend
        state.frontend = Frontend.open(web_root, state.folders["output"])
    try:
        asyncio.run(_serve(state, args.listen, args.port))
    finally:
        state.history.close()
        shutil.rmtree(state.folders["temp"], ignore_errors=True)
    return 0


def _refuse(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def _prepare(args, token, version, policy, origin):
    from ...nodes.context import Runtime, use_runtime
    from ...nodes.safety import checker_names
    from ...sld_core.device import resolve_device
    from ..options import model_folders
    from ..process import prepare_process
    from ..run import Executor
    from .app import State
    from .history import DB_NAME, History

    models = model_folders(args)
    device = resolve_device(args.device)
    prepare_process(device, args.precision)
    output_dir, input_dir = Path(args.output_dir), Path(args.input_dir)
    for folder in (output_dir, input_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidInputError(f"cannot create {folder}: {error.strerror or error}") from None
    temp_dir = Path(tempfile.mkdtemp(prefix="sld-serve-temp-"))
    runtime = Runtime(models=models, input_dir=input_dir, output_dir=output_dir, temp_dir=temp_dir,
                      device=str(device), precision=args.precision, compile=args.compile)
    if policy.require_checker:
        with use_runtime(runtime):
            names = checker_names()
        if policy.require_checker not in names:
            raise InvalidInputError(f"{origin['require_checker']} {policy.require_checker}: no such checker; available: "
                                    f"{', '.join(names) or 'none'}")
    _remove_stale_temporaries(output_dir, input_dir)
    history = History(output_dir / DB_NAME)
    for prompt_id, was in history.recover():
        log.warning("prompt %s was %s when the server stopped; recorded as failed", prompt_id, was)
    executor = Executor(runtime, progress=False)
    return State(executor=executor, queue=None, worker=None, history=history, hub=None, policy=policy,
                 folders={"output": output_dir, "input": input_dir, "temp": temp_dir}, token=token,
                 listen=args.listen, max_body=int(args.max_body_mb * 2**20), max_upload=int(args.max_upload_mb * 2**20),
                 version=version, device=device, number=history.next_number(), max_queue=args.max_queue)


def _remove_stale_temporaries(*folders):
    """Files a killed server was writing (always under a hidden temporary name, never the real one)."""
    for folder in folders:
        for root, _dirs, names in os.walk(folder):
            for name in names:
                if STALE_TEMPORARY.match(name):
                    Path(root, name).unlink(missing_ok=True)


async def _serve(state, host, port):
    from .app import build_app, start_site
    from .hub import Hub
    from .jobs import PromptQueue, Worker

    loop = asyncio.get_running_loop()
    state.hub = Hub(loop)
    state.queue = PromptQueue(state.history, state.hub, max_pending=state.max_queue)
    state.worker = Worker(state.executor, state.queue, state.history, state.hub, state.policy)
    try:
        runner, bound = await start_site(build_app(state), host, port)
    except OSError as error:
        raise SystemExit(_refuse(f"cannot listen on {host}:{port}: {error.strerror or error}")) from None
    state.worker.start()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    policy = ", ".join(f"{k}={v}" for k, v in state.policy.describe().items() if v and k != "on_violation") or "none"
    print(f"sld serve: listening on http://{shown}:{bound} (token {'required' if state.token else 'off'}; "
          f"policy: {policy}; output {state.folders['output']})", file=sys.stderr, flush=True)
    await stop.wait()
    print("sld serve: stopping (the running prompt is interrupted)", file=sys.stderr, flush=True)
    state.queue.stop()
    state.worker.interrupt()
    await loop.run_in_executor(None, state.worker.join, 60)
    for ws, _outbox in list(state.hub.clients.values()):  # an open socket (a browser tab) holds cleanup up
        await ws.close(code=1001, message=b"server stopping")
    await runner.cleanup()
