"""The validator, fuzzed: the shipped workflows broken in every way `fuzz_mutations.py` knows, run
through the real `sld` command line (in this process).

Properties, for every case:
- `sld validate` and `sld run` never raise and never print a traceback; stdout/stderr are written as a
  terminal would take them (stdout UTF-8 strict, stderr UTF-8 with backslash escapes);
- an invalid workflow exits 2, every problem line names a node of the workflow (or the whole file),
  and the node and input the mutation broke are named; a case known to be valid validates;
- a workflow that validates is run, with its cost capped after validation (at most 2 steps, 64x64
  latents, batches of 2): it exits 0 or, for a run-time failure, 1 with the node named; never 2;
- nothing is ever written outside the output folder (PreviewImage: the temp folder); an invalid
  workflow writes nothing at all, not even a folder; files written are whole PNGs, no temporaries.

Budget: a fixed seed (`derandomize=True`) and SLD_FUZZ_EXAMPLES examples in all (default 2000, split
over the tests below by weight), of which at most SLD_FUZZ_RUNS (default 5 % of them, at least 20)
validate and are then executed. No example database and Hypothesis' caches in the system temp
folder, so nothing is written into the repository. A larger budget by hand (-s prints each test's
counts and any run-time failure messages):

    SLD_FUZZ_EXAMPLES=20000 python -m pytest tests/headless/test_fuzz.py -q -s
"""
import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from comfyui_sld.headless import cli
from comfyui_sld.headless import run as run_module
from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS
from comfyui_sld.nodes import context
from comfyui_sld.nodes.context import Runtime, use_runtime
from comfyui_sld.nodes.folders import ModelFolders


def _load_helper():
    path = Path(__file__).with_name("fuzz_mutations.py")
    spec = importlib.util.spec_from_file_location("sld_fuzz_mutations", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fm = _load_helper()
# Hypothesis caches (unicode tables, constants) in ./.hypothesis unless told otherwise; the example
# database is off (database=None below). Neither may land in the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "sld-hypothesis")


@dataclasses.dataclass(frozen=True)
class SandboxRuntime(Runtime):
    """The runtime `sld` builds, with PreviewImage's temp folder inside the sandbox."""

    temp_dir: Path = fm.SANDBOX / "temp"

EXAMPLES = int(os.environ.get("SLD_FUZZ_EXAMPLES", "2000"))
RUNS = int(os.environ.get("SLD_FUZZ_RUNS", str(max(20, EXAMPLES // 20))))
WEIGHTS = {"api": 0.35, "stacked": 0.15, "ui": 0.25, "text": 0.1, "override": 0.15}
WHOLE_FILE_ERRORS = ("is not valid JSON", "is not a text (UTF-8 JSON) file", "is not a ComfyUI workflow",
                     "Prompt has no outputs", "expected NODE_ID.INPUT=VALUE", "nested too deeply",
                     "cannot read PNG", "has no ComfyUI 'prompt' or 'workflow' metadata")


def budget(kind):
    return max(1, round(EXAMPLES * WEIGHTS[kind]))


def fuzz_settings(kind):
    return settings(max_examples=budget(kind), derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=list(HealthCheck))


class Sandbox:
    """The folders one fuzzed `sld` call sees, and the checks of what it wrote."""

    def __init__(self, root):
        self.root = root
        self.out = root / "a" / "b" / "c" / "out"  # deep, so that a '../' escape still lands in the sandbox
        self.temp = root / "temp"
        self.models = root / "models"
        self.input = root / "input"
        self.cwd = root / "cwd"
        self.workflow = root / "wf" / "workflow.json"
        self.runs_left = 0  # set per test: its share of RUNS
        self.stats = {"examples": 0, "invalid": 0, "valid": 0, "ran": 0, "run_failed": 0}
        self.failures = {}  # run-time failure message -> the first case that gave it

    def create(self):
        shutil.rmtree(self.root, ignore_errors=True)
        for folder in (self.out, self.temp, self.models / "checkpoints", self.cwd, self.workflow.parent, fm.ESCAPE):
            folder.mkdir(parents=True)
        shutil.copytree(fm.WORKFLOWS / "input", self.input)

    def snapshot(self):
        """{relative path: (is folder, size, mtime)} of everything but the workflow file itself."""
        out = {}
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = Path(folder) / name
                if path.parent == self.workflow.parent:
                    continue
                stat = path.lstat()
                out[path.relative_to(self.root).as_posix()] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
        return out

    def clean_outputs(self):
        for folder in (self.out, self.temp):
            shutil.rmtree(folder)
            folder.mkdir()

    def write(self, case):
        text = case.text()
        self.workflow.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))

    def sld(self, *args):
        """(exit code, stdout, stderr) of `sld ARGS`; an exception escaping `main` fails the test."""
        stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="\n")
        stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", newline="\n")
        old_cwd = os.getcwd()
        os.chdir(self.cwd)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                    mock.patch.object(context, "Runtime", SandboxRuntime), _logs_to(stderr):
                code = cli.main([str(a) for a in args])
        except BaseException:  # noqa: BLE001 - any escape is the finding
            pytest.fail(f"sld {' '.join(map(str, args))[:300]} raised:\n{traceback.format_exc()}")
        finally:
            os.chdir(old_cwd)
        return code, _read(stdout), _read(stderr)


def _read(stream):
    stream.flush()
    return stream.buffer.getvalue().decode("utf-8")


@contextlib.contextmanager
def _logs_to(stream):
    """Point the package's log handler (made once, on the first `sld` call) at this call's stderr."""
    handlers = [h for h in logging.getLogger(cli.PACKAGE_LOGGER).handlers if isinstance(h, logging.StreamHandler)]
    before = [h.stream for h in handlers]
    for handler in handlers:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler, old in zip(handlers, before):
            handler.setStream(old)


def capped_validate(prompt, registry):
    """validate_prompt, then the cost lowered: the run executes the validated graph, only cheaper."""
    prompt, outputs = REAL_VALIDATE(prompt, registry)
    for node in prompt.values():
        inputs = node["inputs"]
        for name, cap in (("steps", fm.STEP_CAP), ("batch_size", fm.BATCH_CAP), ("width", 64), ("height", 64)):
            if isinstance(inputs.get(name), int) and inputs[name] > cap:
                inputs[name] = cap
    return prompt, outputs


REAL_VALIDATE = run_module.validate_prompt


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(fm.SANDBOX)
    box.create()
    runtime = Runtime(models=ModelFolders(box.models), input_dir=box.input, output_dir=box.out, temp_dir=box.temp)
    with use_runtime(runtime):
        fm.configure(HEADLESS_NODE_CLASS_MAPPINGS)
    yield box
    shutil.rmtree(box.root, ignore_errors=True)


# --- the checks ---------------------------------------------------------------------------------------

def node_ids(case):
    doc = case.doc
    if case.fmt == "text":
        try:
            doc = json.loads(doc)
        except (ValueError, RecursionError):
            return set()
        if isinstance(doc, dict) and isinstance(doc.get("prompt"), dict):
            doc = doc["prompt"]
        if isinstance(doc, dict) and isinstance(doc.get("nodes"), list):
            return {str(n["id"]) for n in doc["nodes"] if isinstance(n, dict) and "id" in n}
    if case.fmt == "ui" and isinstance(doc, dict) and isinstance(doc.get("nodes"), list):
        return {str(n["id"]) for n in doc["nodes"] if isinstance(n, dict) and "id" in n}
    return set(doc) if isinstance(doc, dict) else set()


def problem_lines(err):
    """The problem lines under the header 'error: invalid workflow FILE (N problems)'; hints may follow."""
    lines = err.splitlines()
    count = re.search(r" \((\d+) problems?\); nothing was run$", lines[0]) if lines else None
    return lines[1:1 + (int(count.group(1)) if count else 1)]


def printable(name):
    """How a message shows a name: unprintable characters (ESC, NUL, newline, surrogates) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name))


def names(line, node_id, input_name):
    node_id = printable(node_id)
    if not line.startswith(f"  node {node_id}"):
        return False
    rest = line[len(f"  node {node_id}"):]
    input_name = input_name if input_name in (None, fm.ANY) else printable(input_name)
    if not rest.startswith((" (", ", input", ": ")):
        return False
    if input_name is None or input_name == fm.ANY:
        return True
    return f", input {input_name!r}:" in rest or f", input '{input_name}':" in rest


def check_message(case, code, out, err, args):
    where = f"\ncase: {case.expect.note}\nsld {' '.join(map(str, args))}\nstderr:\n{err[:3000]}"
    assert "Traceback" not in out + err, where
    assert not any(ch in err for ch in "\x1b\r\0"), "raw control characters in the message" + where
    if code != 2:
        return
    lines = problem_lines(err)
    assert err.startswith("error: invalid workflow") and lines, where
    ids = node_ids(case) | {s.partition("=")[0].partition(".")[0] for s in case.overrides}
    for line in lines:
        named = any(names(line, node_id, None) for node_id in ids)
        whole = any(text in line for text in WHOLE_FILE_ERRORS) or line.startswith("  nodes[")
        assert named or whole, f"a problem that names no node of the workflow: {line[:300]!r}" + where
    assert max(map(len, err.splitlines())) <= 2000, "a message line longer than 2000 characters" + where
    blames = case.expect.blames
    if blames and case.expect.verdict != "either":
        hit = any(names(line, n, i) for line in lines for n, i in blames if (n, i) != fm.FILE)
        hit = hit or (fm.FILE in blames and any(text in err for text in WHOLE_FILE_ERRORS))
        assert hit, f"the message names none of {sorted(map(str, blames))[:6]}" + where


def check_files(box, before, case, code, out):
    after = box.snapshot()
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    where = f"\ncase: {case.expect.note}\nexit {code}\n{out[:500]}"
    if code == 2:
        assert not changed, f"an invalid workflow wrote {sorted(changed)[:5]}" + where
        return
    out_rel = box.out.relative_to(box.root).as_posix() + "/"
    temp_rel = box.temp.relative_to(box.root).as_posix() + "/"
    previews = "PreviewImage" in json.dumps(case.doc) if not isinstance(case.doc, (str, bytes)) else False
    allowed = (out_rel, temp_rel) if previews else (out_rel,)
    outside = sorted(p for p in changed if not (p + "/").startswith(allowed))
    assert not outside, f"written outside the output folder: {outside[:5]}" + where
    files = [box.root / p for p in changed if p in after and not after[p][0]]
    for path in files:
        assert not path.name.startswith("."), f"a temporary file was left: {path}" + where
        with Image.open(path) as image:
            image.verify()  # a whole PNG, not a partial one
    if code == 0:
        assert f"Saved {len(files)} image" in out, where


def check_case(box, case):
    box.stats["examples"] += 1
    box.write(case)
    sets = [f"--set={s}" for s in case.overrides]
    common = [*sets, "--models-dir", box.models, "--input-dir", box.input]
    before = box.snapshot()
    args = ["validate", box.workflow, *common]
    code, out, err = box.sld(*args)
    check_message(case, code, out, err, args)
    assert code in (0, 2), f"validate exited {code}\ncase: {case.expect.note}\n{err[:2000]}"
    verdict = case.expect.verdict
    assert verdict != "invalid" or code == 2, f"accepted an invalid workflow: {case.expect.note}\n{out}"
    assert verdict != "valid" or code == 0, f"refused a valid workflow: {case.expect.note}\n{err[:2000]}"
    assert box.snapshot() == before, f"sld validate wrote files\ncase: {case.expect.note}"
    if code == 2:
        box.stats["invalid"] += 1
        if box.stats["invalid"] % 2 == 0:  # `run` validates the same way and must write nothing either
            args = ["run", box.workflow, *common, "--output-dir", box.out, "--device", "cpu", "--quiet"]
            code, out, err = box.sld(*args)
            check_message(case, code, out, err, args)
            assert code == 2, f"validate said invalid, run exited {code}\ncase: {case.expect.note}\n{err[:2000]}"
            check_files(box, before, case, code, out)
        return
    box.stats["valid"] += 1
    if box.runs_left <= 0:
        return
    box.runs_left -= 1
    box.stats["ran"] += 1
    args = ["run", box.workflow, *common, "--output-dir", box.out, "--device", "cpu", "--quiet"]
    with mock.patch.object(run_module, "validate_prompt", capped_validate):
        code, out, err = box.sld(*args)
    check_message(case, code, out, err, args)
    assert code in (0, 1), f"validated, then run exited {code}\ncase: {case.expect.note}\n{err[:2000]}"
    if code == 1:
        box.stats["run_failed"] += 1
        box.failures.setdefault(err.splitlines()[1][:200], case.expect.note)
        assert err.startswith("error: the run failed\n  node "), f"case: {case.expect.note}\n{err[:2000]}"
    check_files(box, before, case, code, out)
    box.clean_outputs()


def fuzz(box, strategy, kind):
    start = dict(box.stats)
    box.runs_left = max(1, round(RUNS * WEIGHTS[kind]))

    @fuzz_settings(kind)
    @given(case=strategy)
    def check(case):
        check_case(box, case)

    check()
    done = box.stats["examples"] - start["examples"]
    print(f"{kind}: {done} examples, " + ", ".join(f"{k} {box.stats[k] - start[k]}" for k in box.stats if k != "examples"))
    for message, note in box.failures.items():
        print(f"  run failed: {message}  <- {note}")
    box.failures.clear()
    assert done >= budget(kind)


# --- the tests ------------------------------------------------------------------------------------------

def test_single_mutations_of_api_workflows(sandbox):
    fuzz(sandbox, fm.api_cases(), "api")


def test_stacked_mutations_of_api_workflows(sandbox):
    fuzz(sandbox, fm.stacked_api_cases(), "stacked")


def test_mutations_of_ui_workflows(sandbox):
    fuzz(sandbox, fm.ui_cases(), "ui")


def test_damaged_files(sandbox):
    fuzz(sandbox, fm.text_cases(), "text")


def test_set_overrides(sandbox):
    fuzz(sandbox, fm.override_cases(), "override")
