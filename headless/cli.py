"""`sld`: run, validate and inspect ComfyUI workflow files without ComfyUI; measure SLD (`sld eval`).

The only place errors are formatted for people. Exit codes, the same for every command:

    0    done
    1    the work started and failed: a node raised while running, a model file that is there could
         not be loaded, a safety checker could not run, out of memory
    2    what was asked for is unusable, so nothing ran and nothing was written: a bad command line,
         an invalid workflow, an option value that cannot work (a --device that is not available, a
         --models-dir or --comfyui-dir that is not a folder, an unreadable prompts CSV, an unknown
         checkpoint, classifier, preset or node name)
    130  interrupted (Ctrl-C)

With --json, one JSON document goes to stdout instead of text, errors included
({"ok": false, "exit_code": ..., "error": {...}}).

Imports are paid for by the commands that need them: `--help` and `--version` load no torch; `run`,
`validate` and `nodes` import the node classes, which import torch only when a node runs; `run` imports the
models when its first loader runs, `eval` when it starts.
"""
import argparse
import json
import logging
import os
import re
import signal
import sys
import textwrap
import traceback
from pathlib import Path

from ..sld_core.errors import InvalidInputError, SLDError
from . import evaluate
from .errors import Interrupted, NodeExecutionError, ValidationError, WorkflowError
from .options import add_model_args, model_folders
from .process import add_speed_args

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
PACKAGE_LOGGER = __name__.rpartition(".headless")[0] or "comfyui_sld"
DISTRIBUTION = "comfyui-sld"
# Inputs whose values are model names from the folders: a "not in list" problem says where they were looked for.
MODEL_INPUTS = {"ckpt_name": "checkpoints", "checker_name": "safety_checker", "lora_name": "loras", "vae_name": "vae"}


def build_parser():
    parser = argparse.ArgumentParser(prog="sld", description="Run ComfyUI workflows with Safe Latent Diffusion, headless.",
                                     epilog="Exit codes: 0 done, 1 failed while running, 2 unusable input "
                                            "(nothing ran), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    def workflow_args(p):
        p.add_argument("file", help="workflow .json (API or UI format) or a PNG saved by ComfyUI/sld")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                       help="override a widget value (VALUE is JSON, else text); repeatable")
        add_model_args(p)
        p.add_argument("--input-dir", help="folder LoadImage reads from; default: 'input' beside the workflow file or its folder")
        p.add_argument("--json", action="store_true", help="print one machine-readable JSON document to stdout")

    run = sub.add_parser("run", help="validate and run a workflow")
    workflow_args(run)
    run.add_argument("--output-dir", default="output", help="where SaveImage writes; default ./output")
    run.add_argument("--device", default="auto", choices=evaluate.DEVICES, help="default: auto (CUDA, else MPS, else CPU)")
    add_speed_args(run)
    run.add_argument("--quiet", action="store_true", help="no progress lines or info messages")

    validate = sub.add_parser("validate", help="check a workflow without running it")
    workflow_args(validate)

    evaluate.add_parser(sub)

    from .server.options import add_parser as add_serve_parser  # argparse only: no aiohttp, no torch

    add_serve_parser(sub, add_model_args, add_speed_args, evaluate.DEVICES)

    nodes = sub.add_parser("nodes", help="list nodes, or show one node's inputs and outputs")
    nodes.add_argument("name", nargs="?", help="a node's class name, e.g. SLDKSampler")
    nodes.add_argument("--json", action="store_true", help="print the node descriptions as JSON")
    return parser


def package_version():
    """The installed distribution's version; from a checkout that is not installed, pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    # A plain read, not tomllib (Python 3.11+): the project table's one `version = "..."` line.
    found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
    return found.group(1) if found else "unknown"


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet = getattr(args, "quiet", False) or args.json
    _configure_logging(quiet)
    try:
        if args.command == "nodes":
            return _nodes(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "serve":
            from .server.main import serve

            return serve(args, package_version())
        return _run_or_validate(args, quiet)
    except KeyboardInterrupt:
        _fail(args, EXIT_INTERRUPTED, {"type": "interrupted", "message": "interrupted"}, "interrupted (Ctrl-C)")
        return EXIT_INTERRUPTED


def _run_or_validate(args, quiet):
    try:
        executor = _executor(args, quiet)
        from .workflow import load_workflow, parse_override, set_input

        workflow = load_workflow(args.file, executor.registry)
        for text in args.overrides:
            set_input(workflow, *parse_override(text), executor.registry)
        if args.command == "validate":
            prompt, outputs = executor.validate(workflow.prompt)
            return _ok(args, {"ok": True, "outputs": outputs, "nodes": len(prompt)},
                       f"{args.file}: valid ({len(prompt)} nodes, output nodes {', '.join(outputs)})")
        with _ctrl_c_sets(executor.interrupt):
            result = executor.run(workflow.prompt, workflow.ui)
    except WorkflowError as error:
        where = _where(error.node_id, None, error.input_name)
        return _fail(args, EXIT_INVALID, {"type": "invalid_workflow", "message": error.message, "node_id": error.node_id,
                                          "input_name": error.input_name},
                     f"error: invalid workflow {args.file}\n  {where}{error.message}")
    except ValidationError as error:
        problems = error.problems()
        lines = [f"  {_where(n, c, i)}{m}" for n, c, i, m in problems]
        lines += _model_folder_hints(problems, executor.runtime.models)
        count = len(problems)
        return _fail(args, EXIT_INVALID, error.report["error"], f"error: invalid workflow {args.file} "
                     f"({count} problem{'s' if count > 1 else ''}); nothing was run\n" + "\n".join(lines),
                     node_errors=error.report["node_errors"])
    except NodeExecutionError as error:
        detail = {"type": "execution_error", "node_id": error.node_id, "node_type": error.class_type,
                  "input_name": error.input_name, "exception_message": error.message,
                  "exception_type": type(error.cause).__name__ if error.cause else None}
        text = f"error: the run failed\n  {_where(error.node_id, error.class_type, error.input_name)}{error.message}"
        if os.environ.get("SLD_DEBUG") and error.cause is not None:
            text += "\n" + "".join(traceback.format_exception(error.cause))
        return _fail(args, EXIT_FAILED, detail, text)
    except Interrupted as error:
        return _fail(args, EXIT_INTERRUPTED, {"type": "interrupted", "message": str(error)},
                     f"stopped: {error}; no partial files were written")
    except InvalidInputError as error:  # an option that cannot work, e.g. --device cuda without CUDA
        return _fail(args, EXIT_INVALID, {"type": "invalid_input", "message": str(error)}, f"error: {error}")
    except SLDError as error:
        return _fail(args, EXIT_FAILED, {"type": type(error).__name__, "message": str(error)}, f"error: {error}")
    return _report_run(args, result)


def _eval(args):
    try:
        document, text = evaluate.run(args)
    except InvalidInputError as error:
        return _fail(args, EXIT_INVALID, {"type": "invalid_input", "message": str(error)}, f"error: {error}")
    except SLDError as error:
        return _fail(args, EXIT_FAILED, {"type": type(error).__name__, "message": str(error)}, f"error: {error}")
    return _ok(args, document, text)


def _executor(args, quiet):
    from ..nodes.context import Runtime
    from .run import Executor

    models = model_folders(args)
    input_dir = Path(args.input_dir) if args.input_dir else default_input_dir(args.file)
    device, precision = "auto", getattr(args, "precision", "auto")
    if args.command == "run":  # validation runs nothing, so it needs no device (and no torch)
        from ..sld_core.device import resolve_device
        from .process import prepare_process

        device = resolve_device(args.device)
        prepare_process(device, precision)
    runtime = Runtime(models=models, input_dir=input_dir,
                      output_dir=Path(getattr(args, "output_dir", "output")), device=str(device),
                      precision=precision, compile=getattr(args, "compile", False))
    # One graph per process: nothing to reuse, so each model is let go after its last use.
    return Executor(runtime, progress=not quiet, keep_outputs=False)


def default_input_dir(workflow_file):
    """The `input` folder beside the workflow, else beside its folder (workflows/api/x.json uses
    workflows/input), else ./input as in ComfyUI."""
    folder = Path(workflow_file).resolve().parent
    for candidate in (folder / "input", folder.parent / "input", Path.cwd() / "input"):
        if candidate.is_dir():
            return candidate
    return folder / "input"


def _model_folder_hints(problems, models):
    """For a model name that is not in its list: one line saying which folders were searched."""
    kinds = dict.fromkeys(MODEL_INPUTS[i] for _, _, i, m in problems if i in MODEL_INPUTS and "not in" in m)
    return [f"  {kind} are looked for in {models.where(kind)}" for kind in kinds]


def _report_run(args, result):
    paths = [_shown_path(args, image) for image in result.images]
    document = {"ok": True, "images": result.images, "executed": result.executed, "cached": result.cached}
    lines = [f"Saved {len(paths)} image{'s' if len(paths) != 1 else ''}:"] + [f"  {p}" for p in paths]
    safety = [line for ui in result.ui.values() for line in ui.get("safety_summary", [])]  # SLDSafetyChecker
    if safety:
        document["safety"] = safety
        lines += safety
    if result.cached:
        lines.append(f"({len(result.executed)} nodes run, {len(result.cached)} reused from cache)")
    return _ok(args, document, "\n".join(lines))


def _shown_path(args, image):
    """A saved file as the user would name it: under --output-dir exactly as given (relative stays
    relative, absolute stays absolute); a preview in the temporary folder by its full path."""
    if image.get("type", "output") != "output":
        return image["path"]
    return str(Path(args.output_dir) / image.get("subfolder", "") / image["filename"])


def _nodes(args):
    from ..nodes import CORE_NODE_CLASS_MAPPINGS, HEADLESS_NODE_CLASS_MAPPINGS

    from .validate import closest_node_names, did_you_mean

    registry = HEADLESS_NODE_CLASS_MAPPINGS
    if args.name is None:
        infos = {name: _node_info(name, registry[name]) for name in sorted(registry, key=str.lower)}
        lines = []
        for name, info in infos.items():
            where = "headless only" if name in CORE_NODE_CLASS_MAPPINGS else "ComfyUI + headless"
            lines.append(f"{name} — {info['category']}, {where}")
            lines += textwrap.wrap("inputs: " + (", ".join(info["input"]) or "none"), NODE_TEXT_WIDTH,
                                   initial_indent="  ", subsequent_indent=" " * 10)
        lines.append(f"{len(infos)} nodes; `sld nodes NAME` describes one with its inputs' types and ranges")
        return _ok(args, infos, "\n".join(lines))
    if args.name not in registry:
        near = closest_node_names(args.name, registry)
        hint = did_you_mean(near) if near else "`sld nodes` lists them"
        return _fail(args, EXIT_INVALID, {"type": "unknown_node", "message": f"no node named {args.name}",
                                          "suggestions": near},
                     f"error: no node named {args.name!r}; {hint}")
    info = _node_info(args.name, registry[args.name])
    return _ok(args, info, _format_node(info))


def _node_info(name, cls):
    from ..nodes import NODE_DISPLAY_NAME_MAPPINGS

    spec = cls.INPUT_TYPES()
    inputs = {}
    for section in ("required", "optional"):
        for input_name, entry in (spec.get(section) or {}).items():
            options = entry[1] if len(entry) > 1 else {}
            kind = "COMBO" if isinstance(entry[0], list) else entry[0]
            inputs[input_name] = {"type": kind, "required": section == "required", **options,
                                  **({"options": entry[0]} if isinstance(entry[0], list) else {})}
    return {"name": name, "display_name": NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "category": getattr(cls, "CATEGORY", ""), "description": getattr(cls, "DESCRIPTION", ""),
            "input": inputs, "output": list(cls.RETURN_TYPES),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}


NODE_TEXT_WIDTH = 100
INPUT_COLUMN = 4 + 22 + 1  # "    name<padded to 22> "


def _format_node(info):
    """One node as text; every COMBO choice is shown, wrapped under its input."""
    lines = [f"{info['name']} ({info['display_name']}) — {info['category']}"]
    if info["description"]:
        lines += textwrap.wrap(info["description"], NODE_TEXT_WIDTH, initial_indent="  ", subsequent_indent="  ")
    lines.append("  inputs:")
    for name, spec in info["input"].items():
        parts = [spec["type"]]
        if "options" in spec:
            parts.append("one of " + ", ".join(map(str, spec["options"])))
        for key in ("default", "min", "max", "step"):
            if key in spec:
                parts.append(f"{key} {spec[key]!r}" if key == "default" else f"{key} {spec[key]}")
        if not spec["required"]:
            parts.append("optional")
        lines += textwrap.wrap(f"    {name:22} " + ", ".join(parts), NODE_TEXT_WIDTH, subsequent_indent=" " * INPUT_COLUMN,
                               break_on_hyphens=False, break_long_words=False)
    outputs = ", ".join(f"{n} ({t})" for n, t in zip(info["output_name"], info["output"])) or "none (output node)"
    lines.append(f"  outputs: {outputs}")
    return "\n".join(lines)


def _where(node_id, class_type, input_name):
    if node_id is None:
        return ""
    text = f"node {node_id}" + (f" ({class_type})" if class_type else "")
    return text + (f", input '{input_name}'" if input_name else "") + ": "


def _ok(args, document, text):
    print(json.dumps(document, indent=2, default=str) if args.json else text)
    return EXIT_OK


def _fail(args, code, error, text, node_errors=None):
    if args.json:
        document = {"ok": False, "exit_code": code, "error": error}
        if node_errors is not None:
            document["node_errors"] = node_errors
        print(json.dumps(document, indent=2, default=str))
    else:
        print(text, file=sys.stderr)
    return code


class _ctrl_c_sets:
    """While active, the first Ctrl-C sets `event` (the run stops at the next step); a second aborts."""

    def __init__(self, event):
        self.event = event
        self.previous = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()
        print("\nstopping after the current step (Ctrl-C again to abort now)", file=sys.stderr)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


class _Once(logging.Filter):
    """Lets each distinct message through once per command: `sld eval` samples hundreds of batches,
    and a note such as "warm-up covers all steps" is worth one line, not one per batch."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def filter(self, record):
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is when a message comes (a test or a host that
    redirects stderr gets the messages; a stream closed since is never written to)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler sets it; the current stderr is always used
        pass


def _configure_logging(quiet):
    """The package's messages go to stderr as plain lines (each distinct one once per command); the
    levels of the package's modules are left as they are."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    for old in [f for f in handler.filters if isinstance(f, _Once)]:
        handler.removeFilter(old)
    handler.addFilter(_Once())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
