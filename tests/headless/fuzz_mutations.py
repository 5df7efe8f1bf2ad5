"""Hypothesis strategies that break the shipped workflows, each broken workflow with what `sld` owes it.

A `Case` is one workflow document (API or UI format, or raw file text) plus an `Expect`: whether
validation must refuse it ("invalid"), must accept it ("valid"), or may do either, and which
(node id, input) an invalid verdict must name. The verdicts are written here from ComfyUI's widget
rules (a value's type, min, max and step as the node declares them; a link's target, slot and type;
the filename/path rules) — never by calling the validator under test. `test_fuzz.py` runs them.

The bases are the shipped workflows with their cost lowered (2 steps, batch of at most 2), so that a
mutation that keeps them valid runs in well under a second on the embedded demo model.
"""
import copy
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
# The shipped workflows that run on the embedded demo model, the only model in the sandbox (the SDXL one
# names sd_xl_base_1.0.safetensors: tests/headless/test_sdxl_workflow.py runs it).
NAMES = sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json") if '"sld_demo.safetensors"' in p.read_text())

# The sandbox every fuzzed run reads and writes in; strings that point into it (absolute paths) are
# part of the strategies, so it is fixed when this module is imported.
SANDBOX = Path(tempfile.gettempdir()) / f"sld-fuzz-{os.getpid()}"
ESCAPE = SANDBOX / "escape"

ANY = "*"  # "any input of this node" in a blame
FILE = ("<file>", None)  # the whole file is refused (not JSON, not a workflow, no outputs)
STEP_CAP, BATCH_CAP = 2, 2


class Raw(str):
    """JSON text placed verbatim in the written file (numbers JSON can hold but Python cannot print back)."""


@dataclass
class Expect:
    verdict: str  # "invalid", "valid" or "either"
    blames: set = field(default_factory=set)  # {(node id, input name or ANY or None)}; FILE for whole-file
    note: str = ""


@dataclass
class Case:
    fmt: str  # "api", "ui" or "text"
    name: str  # the shipped workflow it came from
    doc: object  # dict (api/ui) or str/bytes (text)
    expect: Expect
    overrides: list = field(default_factory=list)

    def text(self):
        if self.fmt == "text":
            return self.doc
        return dumps(self.doc)


def dumps(value):
    """JSON text of `value`, with `Raw` pieces verbatim and NaN/Infinity as Python's json writes them."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


# --- the bases --------------------------------------------------------------------------------------

def _cheap_api(prompt):
    for node in prompt.values():
        inputs = node["inputs"]
        if "steps" in inputs:
            inputs["steps"] = STEP_CAP
        if "batch_size" in inputs:
            inputs["batch_size"] = min(inputs["batch_size"], BATCH_CAP)
    return prompt


def _cheap_ui(ui):
    for node in ui["nodes"]:
        values = node.get("widgets_values")
        if node["type"] in ("KSampler", "SLDKSampler"):
            values[2] = STEP_CAP  # seed, control_after_generate, steps, ...
        if node["type"] == "EmptyLatentImage":
            values[2] = min(values[2], BATCH_CAP)
    return ui


API_BASES = {n: _cheap_api(json.loads((WORKFLOWS / "api" / f"{n}.json").read_text())) for n in NAMES}
UI_BASES = {n: _cheap_ui(json.loads((WORKFLOWS / f"{n}.json").read_text())) for n in NAMES}


def node_specs(registry):
    """{class: {input: (kind, options)}} and {class: RETURN_TYPES}: the declared contract the verdicts use."""
    inputs, returns = {}, {}
    for name, cls in registry.items():
        spec = cls.INPUT_TYPES()
        inputs[name] = {k: (v[0], v[1] if len(v) > 1 and isinstance(v[1], dict) else {})
                        for section in ("required", "optional") for k, v in (spec.get(section) or {}).items()}
        returns[name] = tuple(cls.RETURN_TYPES)
    return inputs, returns


# Filled in by `configure` (the specs need the sandbox's folders active).
SPECS, RETURNS, OUTPUT_CLASSES = {}, {}, set()


def configure(registry):
    specs, returns = node_specs(registry)
    SPECS.update(specs)
    RETURNS.update(returns)
    OUTPUT_CLASSES.update(n for n, c in registry.items() if getattr(c, "OUTPUT_NODE", False))


# --- values -----------------------------------------------------------------------------------------

PATH_TRICKS = [
    "../x", "../../x", "../../../../../../x", "a/../../x", "..", ".", "", " ", "/", "//x", "/etc/passwd",
    str(ESCAPE / "x"), str(SANDBOX / "input" / "sld_example.png"), "C:\\x", "C:x", "\\\\server\\share\\x",
    "..\\x", "a\\..\\..\\x", "x\0y", "\0", "~/x", "$HOME/x", "%width%/../x", "%year%-%month%", "sub/dir/x",
    "sub//x", "x/", "./x", "a/.", "./.", "...", "a/./b", "con", "nul", "x\n", "x\ry", "\x1b[31mred", "\t", "a" * 255, "a" * 256, "a" * 5000,
    "é" * 128, "é" * 200, "sub/" + "b" * 300 + "/x", "\ud800", "x\udcff", "😀" * 70, "sld_demo.safetensors\0",
    "sld_demo.safetensors/..", "./sld_demo.safetensors", "checkpoints/sld_demo.safetensors", "SLD_DEMO.safetensors",
    "sld_example.png", "./sld_example.png", "../input/sld_example.png", "sld_example.png/", "sld_example.png\0",
    "input/../sld_example.png", "sld_demo_checker", "../sld_demo_checker",
]
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324, 0.1, 0.5, 7.0, 2.5, 1e-9]
SPECIAL_INTS = [0, 1, 2, -1, 7, 8, 16, 63, 64, 65, 100, 4096, 10000, 10001, 16384, 16385, 2**31, 2**53 + 1,
                2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 10**30]
RAW_NUMBERS = [Raw("1e400"), Raw("-1e400"), Raw("1" + "0" * 400), Raw("-" + "9" * 1000), Raw("1" * 4301),
               Raw("1E2"), Raw("-0"), Raw("0.0e0"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1.5e-400")]


def _deep(depth):
    return Raw("[" * depth + "]" * depth)


def numbers():
    return st.one_of(st.integers(-10, 100), st.sampled_from(SPECIAL_INTS), st.integers(-(2**70), 2**70),
                     st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=True, allow_infinity=True),
                     st.floats(-2, 2), st.sampled_from(RAW_NUMBERS))


def strings():
    return st.one_of(st.text(max_size=30), st.sampled_from(PATH_TRICKS), st.from_regex(r"[a-z0-9_/.]{0,20}", fullmatch=True),
                     st.integers(256, 4000).map(lambda n: "n" * n),
                     st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
                     st.text(st.characters(categories=["Cs", "Cc", "Zs", "Mn"]), min_size=1, max_size=8),
                     st.sampled_from(["12", " 7 ", "1e3", "1_000", "0x10", "nan", "inf", "-1", "2.0", "true"]))


def links():
    node = st.one_of(st.sampled_from([str(i) for i in range(0, 14)]), st.integers(-2, 14), st.text(max_size=4))
    slot = st.one_of(st.integers(-2, 4), st.sampled_from([2**63, 10**20]))
    return st.tuples(node, slot).map(list)


def bad_links():
    """List values that look like links but are not: wrong length, types or nesting."""
    return st.one_of(
        st.lists(st.one_of(st.integers(0, 9), st.text(max_size=3)), max_size=4).filter(lambda v: len(v) != 2),
        st.tuples(st.sampled_from(["1", "5", 1]), st.sampled_from(["0", 0.0, 1.5, True, None, [0]])).map(list),
        st.tuples(st.sampled_from([1.0, True, None, ["1"], {"id": 1}]), st.integers(0, 2)).map(list),
        st.integers(1, 60).map(_deep), st.integers(900, 3000).map(_deep))


def values():
    return st.one_of(numbers(), strings(), links(), bad_links(), st.none(), st.booleans(),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                     st.sampled_from([{"__value__": 5}, {"__value__": "euler"}, {"__value__": [1, 2]}, [], {}]))


# --- verdicts ---------------------------------------------------------------------------------------

def parsed(value):
    """(`value` as the runner will read it back from the JSON file, True), or (None, False) when the
    file cannot be read. The round trip matters: JSON joins a surrogate pair into one character."""
    try:
        return json.loads(dumps(value)), True
    except (ValueError, RecursionError):
        return None, False


def value_verdict(class_type, input_name, value):
    """'valid', 'invalid' or 'either' for a constant (or link) given to a declared input."""
    value, readable = parsed(value)
    if not readable:
        return "file"
    kind, options = SPECS[class_type][input_name]
    if isinstance(value, dict) and "__value__" in value:
        return "either"  # the frontend's wrapper of list-valued widgets
    if isinstance(value, list):
        return "either" if _looks_like_link(value) else "invalid"
    if not (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN")):
        return "invalid"  # a constant for a link-only input
    if isinstance(kind, list):
        if class_type == "LoadImage":  # checked as a file in the input folder
            return "valid" if value in kind else ("either" if isinstance(value, str) else "invalid")
        return "valid" if isinstance(value, str) and value in kind else "invalid"
    if kind == "STRING":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return "invalid"
        if isinstance(value, str) and re.search("[\ud800-\udfff]", value):
            return "invalid"  # a lone surrogate: not Unicode text
        if class_type == "SaveImage":
            return prefix_verdict(str(value) if not isinstance(value, str) else value)
        return "valid"
    if kind == "BOOLEAN":
        return "valid" if isinstance(value, bool) else "invalid"
    return number_verdict(kind, options, value)


def _looks_like_link(value):
    return (len(value) == 2 and isinstance(value[0], (str, int)) and not isinstance(value[0], bool)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def number_verdict(kind, options, value):
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return "invalid"
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return "invalid"
        return "either" if math.isfinite(number) else "invalid"
    if isinstance(value, float) and not math.isfinite(value):
        return "invalid"
    if kind == "INT" and isinstance(value, float):
        if not value.is_integer():
            return "invalid"
        if abs(value) < 2**53:
            return "either" if _in_range(int(value), options, kind) else "invalid"
        return "either"
    return "valid" if _in_range(value, options, kind) else "invalid"


def _in_range(value, options, kind):
    if "min" in options and value < options["min"]:
        return False
    if "max" in options and value > options["max"]:
        return False
    return not (kind == "INT" and options.get("step", 1) > 1 and value % options["step"])


def prefix_verdict(prefix):
    """SaveImage's filename_prefix: a relative name that stays in the output folder and can be a file."""
    parts = re.split(r"[\\/]+", prefix)
    if ("\0" in prefix or prefix.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", prefix) or ".." in parts
            or not parts[-1].strip() or parts[-1] == "."):
        return "invalid"
    try:
        if any(len(p.encode("utf-8")) > 200 for p in parts):
            return "invalid"  # the file name of 255 bytes at most, less the counter and temporary suffixes
    except UnicodeEncodeError:
        return "invalid"  # a lone surrogate cannot be in a file name
    if re.fullmatch(r"[A-Za-z0-9_ .%-]+(/[A-Za-z0-9_ .%-]+)*", prefix) and not any(p.strip(". ") == "" for p in parts):
        return "valid"
    return "either"


# --- API-format mutations: each edits `prompt` in place and returns its Expect ----------------------

def _node(draw, prompt):
    return draw(st.sampled_from(sorted(prompt)))


def _consumers(prompt, node_id):
    return {(n, i) for n, node in prompt.items() if isinstance(node, dict)
            for i, v in (node.get("inputs") or {}).items() if isinstance(v, list) and len(v) == 2 and str(v[0]) == node_id}


def drop_input(draw, prompt):
    node_id = _node(draw, prompt)
    name = draw(st.sampled_from(sorted(prompt[node_id]["inputs"])))
    del prompt[node_id]["inputs"][name]
    return Expect("invalid", {(node_id, name)}, f"drop input {node_id}.{name}")


def rename_input(draw, prompt):
    node_id = _node(draw, prompt)
    inputs = prompt[node_id]["inputs"]
    name = draw(st.sampled_from(sorted(inputs)))
    new = draw(st.one_of(st.text(max_size=12), st.sampled_from([name.upper(), name + " ", "_" + name])))
    if new == name:
        new = name + "_"
    inputs[new] = inputs.pop(name)
    return Expect("invalid", {(node_id, name)}, f"rename input {node_id}.{name} -> {new!r}")


def set_value(draw, prompt):
    node_id = _node(draw, prompt)
    node = prompt[node_id]
    name = draw(st.sampled_from(sorted(SPECS[node["class_type"]])))
    value = draw(values())
    node["inputs"][name] = value
    verdict = value_verdict(node["class_type"], name, value)
    if verdict == "file":
        return Expect("invalid", {FILE, (node_id, name)}, f"unreadable value at {node_id}.{name}")
    return Expect(verdict, {(node_id, name)}, f"set {node_id}.{name} = {value!r:.60}")


def relink(draw, prompt):
    """Point an input at another output: any node (or a missing one), any slot."""
    node_id = _node(draw, prompt)
    node = prompt[node_id]
    name = draw(st.sampled_from(sorted(SPECS[node["class_type"]])))
    source = draw(st.one_of(st.sampled_from(sorted(prompt)), st.sampled_from(["99", "0", "-1", "", "1.0", " 1"])))
    as_int = draw(st.booleans()) and source.isdigit()
    slot = draw(st.one_of(st.integers(0, 3), st.sampled_from([-1, 2**63, 10**20])))
    node["inputs"][name] = [int(source) if as_int else source, slot]
    kind = SPECS[node["class_type"]][name][0]
    note = f"link {node_id}.{name} -> [{source!r}, {slot}]"
    if source not in prompt:
        return Expect("invalid", {(node_id, name)}, note)
    returns = RETURNS[prompt[source]["class_type"]]
    if not 0 <= slot < len(returns):
        return Expect("invalid", {(node_id, name)}, note)
    received = returns[slot]
    fits = received == kind if not isinstance(kind, list) else received == "COMBO"
    if not fits:
        return Expect("invalid", {(node_id, name)}, note)
    if source == node_id:
        return Expect("invalid", {(node_id, name)}, note + " (self-loop)")
    return Expect("either", {(node_id, name)} | _cycle_blames(prompt), note)


def _cycle_blames(prompt):
    return {(n, i) for n, node in prompt.items() for i, v in node["inputs"].items() if isinstance(v, list)}


def swap_links(draw, prompt):
    """Exchange the links of two inputs (positive/negative, model/clip ...)."""
    linked = sorted((n, i) for n, node in prompt.items() for i, v in node["inputs"].items() if isinstance(v, list))
    (n1, i1), (n2, i2) = draw(st.lists(st.sampled_from(linked), min_size=2, max_size=2, unique=True))
    a, b = prompt[n1]["inputs"][i1], prompt[n2]["inputs"][i2]
    prompt[n1]["inputs"][i1], prompt[n2]["inputs"][i2] = b, a

    def fits(node_id, name, link):
        kind = SPECS[prompt[node_id]["class_type"]][name][0]
        return RETURNS[prompt[str(link[0])]["class_type"]][link[1]] == kind

    verdict = "either" if fits(n1, i1, b) and fits(n2, i2, a) else "invalid"
    return Expect(verdict, {(n1, i1), (n2, i2)} | (_cycle_blames(prompt) if verdict == "either" else set()),
                  f"swap {n1}.{i1} <-> {n2}.{i2}")


def drop_node(draw, prompt):
    node_id = _node(draw, prompt)
    consumers = _consumers(prompt, node_id)
    del prompt[node_id]
    outputs = [n for n, node in prompt.items() if node["class_type"] in OUTPUT_CLASSES]
    blames = consumers | ({FILE} if not outputs else set())
    return Expect("invalid", blames, f"drop node {node_id}")


def replace_class(draw, prompt):
    node_id = _node(draw, prompt)
    new = draw(st.one_of(st.sampled_from(sorted(SPECS)), st.text(max_size=20), st.none(), st.integers(),
                         st.sampled_from([[], ["KSampler"], {"name": "KSampler"}, "ksampler", "SaveImage ",
                                          "\x1b[2JSaveImage", "Save\nImage", "a" * 3000])))
    old = prompt[node_id]["class_type"]
    if new == old:
        return Expect("valid", set(), "class unchanged")
    prompt[node_id]["class_type"] = new
    note = f"class of {node_id}: {old} -> {new!r:.40}"
    if isinstance(new, str) and new in SPECS:
        return Expect("either", {(node_id, ANY), (node_id, None)} | _consumers(prompt, node_id)
                      | ({FILE} if old in OUTPUT_CLASSES else set()), note)
    return Expect("invalid", {(node_id, None)}, note)


def break_node(draw, prompt):
    """The node is not an object, or its inputs are not, or one of its keys is missing."""
    node_id = _node(draw, prompt)
    how = draw(st.sampled_from(["node", "inputs", "no-inputs", "no-class"]))
    junk = draw(st.one_of(st.sampled_from([None, [], "x", 5, 1.5, True, [1, 2]]), st.lists(st.integers(), max_size=3)))
    if how == "node":
        prompt[node_id] = junk
    elif how == "inputs":
        prompt[node_id]["inputs"] = junk
    elif how == "no-inputs":
        del prompt[node_id]["inputs"]
        return Expect("invalid", {(node_id, ANY)}, f"node {node_id} without inputs")
    else:
        del prompt[node_id]["class_type"]
    return Expect("invalid", {(node_id, None)}, f"break node {node_id} ({how}: {junk!r})")


def extra_input(draw, prompt):
    """An input the node does not declare: ignored, as ComfyUI does, unless it is a link that matters."""
    node_id = _node(draw, prompt)
    name = draw(st.text(min_size=1, max_size=10).filter(lambda n: n not in SPECS[prompt[node_id]["class_type"]]))
    value = draw(st.one_of(numbers(), strings(), st.none()))
    prompt[node_id]["inputs"][name] = value
    if parsed(value)[1] is False:
        return Expect("invalid", {FILE, (node_id, name)}, f"extra unreadable input {node_id}.{name}")
    return Expect("valid", set(), f"extra input {node_id}.{name}")


def rename_node(draw, prompt):
    node_id = _node(draw, prompt)
    new = draw(st.one_of(st.sampled_from(["0" + node_id, " " + node_id, node_id + ".0", "-" + node_id, "",
                                          "a/b", "\x1b[1m", "a" * 500, "é", "\n"]), st.text(max_size=8)))
    if new in prompt:
        return Expect("valid", set(), "rename onto existing id (skipped)")
    consumers = _consumers(prompt, node_id)
    prompt[new] = prompt.pop(node_id)
    if not consumers:  # an output node: it keeps working under its new id
        return Expect("valid", set(), f"rename output node {node_id} -> {new!r}")
    return Expect("invalid", consumers, f"rename node {node_id} -> {new!r}")


def add_cycle(draw, prompt):
    """Close a loop: an image fed back into a node that (indirectly) made it."""
    decoders = sorted(n for n, node in prompt.items() if node["class_type"] == "VAEDecode")
    samplers = sorted(n for n, node in prompt.items() if "latent_image" in node["inputs"])
    vae = prompt[decoders[0]]["inputs"]["vae"]
    length = draw(st.integers(1, 6))
    ids = [str(100 + k) for k in range(length)]
    decoder, sampler = draw(st.sampled_from(decoders)), draw(st.sampled_from(samplers))
    source = [decoder, 0]
    for node_id in ids:  # a chain of grids (IMAGE -> IMAGE) between the decoder and the encoder
        prompt[node_id] = {"class_type": "SLDImageGrid", "inputs": {"images": source, "columns": 0, "spacing": 0,
                                                                    "background": 1.0}}
        source = [node_id, 0]
    prompt["99"] = {"class_type": "VAEEncode", "inputs": {"pixels": source, "vae": vae}}
    prompt[sampler]["inputs"]["latent_image"] = ["99", 0]
    linked = _cycle_blames(prompt)
    # A sampler that does not feed `decoder` leaves no loop (e.g. the other row of sld_compare).
    return Expect("either", linked, f"cycle through {sampler}.latent_image and {length} grid(s)")


def long_chain(draw, prompt):
    """Hundreds of identity nodes between the image and the output: no recursion limit may show."""
    length = draw(st.one_of(st.integers(2, 50), st.integers(900, 1500)))
    save = sorted(n for n, node in prompt.items() if node["class_type"] in OUTPUT_CLASSES)[0]
    source = prompt[save]["inputs"]["images"]
    for k in range(length):
        node_id = f"c{k}"
        prompt[node_id] = {"class_type": "SLDImageGrid", "inputs": {"images": source, "columns": 1, "spacing": 0,
                                                                    "background": 0.5}}
        source = [node_id, 0]
    prompt[save]["inputs"]["images"] = source
    return Expect("valid", set(), f"chain of {length} grids")


def deep_value(draw, prompt):
    node_id = _node(draw, prompt)
    name = draw(st.sampled_from(sorted(prompt[node_id]["inputs"])))
    depth = draw(st.one_of(st.integers(2, 200), st.integers(200, 1200), st.integers(1200, 100000)))
    inner = draw(st.sampled_from(['"x"', "1", ""]))
    prompt[node_id]["inputs"][name] = Raw("[" * depth + inner + "]" * depth)
    return Expect("invalid", {(node_id, name), FILE}, f"{depth}-deep list at {node_id}.{name}")


PATH_INPUTS = ("ckpt_name", "filename_prefix", "image", "checker_name", "text")


def path_value(draw, prompt):
    """Unicode and path tricks where a name or text is expected: ../, absolute, NUL, very long."""
    targets = sorted((n, i) for n, node in prompt.items() for i in node["inputs"] if i in PATH_INPUTS)
    node_id, name = draw(st.sampled_from(targets))
    value = draw(strings())
    prompt[node_id]["inputs"][name] = value
    return Expect(value_verdict(prompt[node_id]["class_type"], name, value), {(node_id, name)},
                  f"set {node_id}.{name} = {value!r:.60}")


def valid_value(draw, prompt):
    """A value the widget's declaration allows (an option, a number in range and on its step): every
    combination of sampler, scheduler, preset, denoise ... that validation lets through must run."""
    widgets = sorted((n, i) for n, node in prompt.items() for i, (kind, _) in SPECS[node["class_type"]].items()
                     if (isinstance(kind, list) and kind) or kind in ("INT", "FLOAT", "BOOLEAN"))
    node_id, name = draw(st.sampled_from(widgets))
    class_type = prompt[node_id]["class_type"]
    kind, options = SPECS[class_type][name]
    if isinstance(kind, list):
        value = draw(st.sampled_from(kind))
    elif kind == "BOOLEAN":
        value = draw(st.booleans())
    elif kind == "INT":
        low, high, step = options.get("min", -(2**63)), options.get("max", 2**63), options.get("step", 1)
        value = draw(st.one_of(st.sampled_from([low, high]), st.integers(low, min(high, low + 64))))
        value = low + (value - low) // step * step
    else:
        low, high = options.get("min", -1e6), options.get("max", 1e6)
        value = draw(st.one_of(st.sampled_from([low, high]), st.floats(low, high)))
    prompt[node_id]["inputs"][name] = value
    # An EmptyLatentImage at the largest sizes is refused as too large for this machine's memory.
    verdict = "either" if class_type == "EmptyLatentImage" else "valid"
    return Expect(verdict, {(node_id, name)}, f"set {node_id}.{name} = {value!r} (allowed)")


API_MUTATIONS = [valid_value, valid_value, path_value, path_value, drop_input, rename_input, set_value, set_value, set_value, relink, swap_links, drop_node,
                 replace_class, break_node, extra_input, rename_node, add_cycle, long_chain, deep_value]


@st.composite
def api_cases(draw, mutations=API_MUTATIONS):
    name = draw(st.sampled_from(NAMES))
    prompt = copy.deepcopy(API_BASES[name])
    mutation = draw(st.sampled_from(mutations))
    expect = mutation(draw, prompt)
    return Case("api", name, prompt, expect)


@st.composite
def stacked_api_cases(draw):
    """Two to five mutations at once: only the properties that hold for any graph are checked."""
    name = draw(st.sampled_from(NAMES))
    prompt = copy.deepcopy(API_BASES[name])
    notes = []
    for _ in range(draw(st.integers(2, 5))):
        mutation = draw(st.sampled_from([m for m in API_MUTATIONS if m is not long_chain]))
        try:
            notes.append(mutation(draw, prompt).note)
        except (KeyError, TypeError, AttributeError, IndexError):
            notes.append(f"{mutation.__name__}: not applicable after the previous ones")  # the graph is already broken
    return Case("api", name, prompt, Expect("either", set(), "; ".join(notes)))


# --- UI-format mutations ----------------------------------------------------------------------------

def _ui_node(draw, ui):
    return draw(st.integers(0, len(ui["nodes"]) - 1))


def ui_widgets(draw, ui):
    node = ui["nodes"][_ui_node(draw, ui)]
    values = node.get("widgets_values")
    how = draw(st.sampled_from(["set", "set", "drop", "insert", "truncate", "replace"]))
    if how == "replace" or not values:
        node["widgets_values"] = draw(st.one_of(values(), st.dictionaries(st.text(max_size=8), values(), max_size=3)))
    elif how == "set":
        values[draw(st.integers(0, len(values) - 1))] = draw(values())
    elif how == "drop":
        del values[draw(st.integers(0, len(values) - 1))]
    elif how == "insert":
        values.insert(draw(st.integers(0, len(values))), draw(values()))
    else:
        del values[draw(st.integers(0, len(values))):]
    return f"widgets of {node['id']}: {how}"


def ui_node_fields(draw, ui):
    index = _ui_node(draw, ui)
    node = ui["nodes"][index]
    key = draw(st.sampled_from(["id", "type", "mode", "inputs", "outputs", "title", "<node>", "<drop>"]))
    junk = draw(st.one_of(st.sampled_from([None, [], {}, "x", -1, 1.5, True, 2, 4, 3, [1], "4", 10**30]),
                          st.text(max_size=10), st.sampled_from(sorted(SPECS) + ["Reroute", "Note", "PrimitiveNode",
                                                                                 "MarkdownNote"])))
    if key == "<node>":
        ui["nodes"][index] = junk
    elif key == "<drop>":
        del ui["nodes"][index]
    elif key == "id" and draw(st.booleans()):
        node["id"] = ui["nodes"][(index + 1) % len(ui["nodes"])]["id"]  # duplicate id
    else:
        node[key] = junk
    return f"node[{index}].{key} = {junk!r:.40}"


def ui_slots(draw, ui):
    node = ui["nodes"][_ui_node(draw, ui)]
    slots = node.get("inputs") or []
    if not slots:
        node["inputs"] = [draw(st.dictionaries(st.sampled_from(["name", "type", "link"]), values(), max_size=3))]
        return f"slot added to {node['id']}"
    index = draw(st.integers(0, len(slots) - 1))
    how = draw(st.sampled_from(["link", "link", "name", "junk", "drop", "no-name"]))
    if how == "link":
        slots[index]["link"] = draw(st.one_of(st.integers(-1, 40), st.sampled_from([None, "1", 1.5, [1], {}, True, 10**30])))
    elif how == "name":
        slots[index]["name"] = draw(st.one_of(st.text(max_size=8), st.sampled_from([None, 1, [], "model", "images"])))
    elif how == "junk":
        slots[index] = draw(st.sampled_from([None, 1, "x", [], [1, 2]]))
    elif how == "drop":
        del slots[index]
    else:
        del slots[index]["name"]
    return f"slot {index} of {node['id']}: {how}"


def ui_links(draw, ui):
    links = ui["links"]
    how = draw(st.sampled_from(["field", "field", "drop", "short", "junk", "objects", "replace"]))
    if how == "replace":
        ui["links"] = draw(st.sampled_from([None, {}, "x", 5, [None], [[]], {"1": [1, 1, 0, 2, 0, "CLIP"]}]))
        return f"links = {ui['links']!r}"
    index = draw(st.integers(0, len(links) - 1))
    if how == "field":  # [id, origin id, origin slot, target id, target slot, type]
        position = draw(st.integers(0, 5))
        links[index][position] = draw(st.one_of(st.integers(-2, 40), st.sampled_from(
            [None, "1", 1.5, [1], {}, True, 10**30, -(10**30), "CLIP", "IMAGE"])))
    elif how == "drop":
        del links[index]
    elif how == "short":
        links[index] = links[index][:draw(st.integers(0, 4))]
    elif how == "junk":
        links[index] = draw(st.sampled_from([None, 1, "x", {}, {"id": [1]}, {"id": 1, "origin_id": None}]))
    else:  # the schema-1 object form, possibly with wrong field types
        ui["links"] = [{"id": link[0], "origin_id": link[1], "origin_slot": link[2], "target_id": link[3],
                        "target_slot": link[4], "type": link[5]} for link in links if isinstance(link, list) and len(link) >= 6]
        if ui["links"]:
            ui["links"][0][draw(st.sampled_from(["id", "origin_id", "origin_slot"]))] = draw(values())
    return f"links: {how}"


def ui_reroutes(draw, ui):
    """Reroute nodes on a link: a chain (possibly very long), or a loop of reroutes."""
    links = [link for link in ui["links"] if isinstance(link, list)]
    link = draw(st.sampled_from(links))
    length = draw(st.one_of(st.integers(1, 5), st.integers(900, 1500)))
    loop = draw(st.booleans())
    next_id, next_link = 10_000, 10_000
    origin, origin_slot = link[1], link[2]
    for _ in range(length):
        ui["nodes"].append({"id": next_id, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": next_link}],
                            "outputs": [{"name": "", "type": link[5], "links": [next_link + 1]}]})
        ui["links"].append([next_link, origin, origin_slot, next_id, 0, link[5]])
        origin, origin_slot = next_id, 0
        next_id, next_link = next_id + 1, next_link + 1
    if loop:  # the first reroute's input comes from the last reroute
        ui["links"].append([next_link + 5, origin, 0, 10_000, 0, link[5]])
        ui["nodes"][-length]["inputs"][0]["link"] = next_link + 5
    link[1], link[2] = origin, origin_slot
    return f"{length} reroute(s){' in a loop' if loop else ''} on link {link[0]}"


def ui_modes(draw, ui):
    node = ui["nodes"][_ui_node(draw, ui)]
    node["mode"] = draw(st.sampled_from([0, 2, 4, 4, 1, 3]))
    return f"mode of {node['id']} = {node['mode']}"


def ui_top(draw, ui):
    key = draw(st.sampled_from(["definitions", "nodes", "version", "extra"]))
    junk = draw(st.sampled_from([None, [], {}, "x", 5, {"subgraphs": None}, {"subgraphs": "x"}, {"subgraphs": [None, 1]},
                                 {"subgraphs": [{"id": "SLDKSampler"}]}, {"subgraphs": [{"id": ["x"]}]}]))
    if key == "nodes" and isinstance(junk, list):
        junk = [junk]
    ui[key] = junk
    return f"{key} = {junk!r}"


UI_MUTATIONS = [ui_widgets, ui_widgets, ui_node_fields, ui_node_fields, ui_slots, ui_links, ui_links, ui_reroutes,
                ui_modes, ui_top]


@st.composite
def ui_cases(draw):
    name = draw(st.sampled_from(NAMES))
    ui = copy.deepcopy(UI_BASES[name])
    notes = []
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(UI_MUTATIONS))
        try:
            notes.append(mutation(draw, ui))
        except (KeyError, TypeError, AttributeError, IndexError, ValueError):
            notes.append(f"{mutation.__name__}: not applicable after the previous ones")
    return Case("ui", name, ui, Expect("either", set(), "; ".join(notes)))


# --- whole files --------------------------------------------------------------------------------------

@st.composite
def text_cases(draw):
    """The file itself is damaged: truncated, wrongly encoded, not an object, huge numbers, deep nesting."""
    name = draw(st.sampled_from(NAMES))
    fmt = draw(st.sampled_from(["api", "ui"]))
    text = dumps(API_BASES[name] if fmt == "api" else UI_BASES[name])
    how = draw(st.sampled_from(["truncate", "bom", "utf16", "latin1", "garbage", "top", "deep", "number", "splice",
                                "empty", "dupkeys"]))
    if how == "truncate":
        doc = text[:draw(st.integers(0, len(text) - 1))]
    elif how == "bom":
        doc = "\ufeff" + text
    elif how == "utf16":
        doc = text.encode("utf-16")
    elif how == "latin1":
        doc = text.replace('"a ', '"\u00e9 ').encode("latin-1")
    elif how == "garbage":
        doc = draw(st.binary(max_size=64))
    elif how == "top":
        doc = draw(st.sampled_from(["[]", "null", "1", '"x"', "{}", '{"nodes": 5}', '{"nodes": []}', '{"prompt": {}}',
                                    '{"prompt": []}', '{"prompt": {"1": 5}}', '{"1": {}}', '{"1": []}',
                                    '{"nodes": [], "links": "x"}', '{"prompt": {"1": {"class_type": "SaveImage"}}, '
                                    '"extra_data": 5}']))
    elif how == "deep":
        depth = draw(st.integers(100, 200000))
        doc = "[" * depth + "]" * depth if draw(st.booleans()) else '{"a":' * depth + "1" + "}" * depth
    elif how == "number":
        number = draw(st.sampled_from(RAW_NUMBERS))
        doc = re.sub(r"(?<=[:\[ ])\d+(\.\d+)?(?=[,\]}])", lambda m: str(number), text, count=draw(st.integers(1, 3)))
    elif how == "splice":
        at = draw(st.integers(0, len(text)))
        doc = text[:at] + draw(st.sampled_from(["\0", "\\", '"', "}", "]", ",", "\ud800", "\\u0000", "\\ud800"])) + text[at:]
    elif how == "empty":
        doc = draw(st.sampled_from(["", " ", "\n"]))
    else:
        doc = text.replace("{", '{"class_type": 5, ', 1)
    return Case("text", name, doc, Expect("either", {FILE}, how))


# --- --set overrides ----------------------------------------------------------------------------------

@st.composite
def override_cases(draw):
    name = draw(st.sampled_from(NAMES))
    ui = draw(st.booleans())
    prompt = API_BASES[name]
    node_id = draw(st.one_of(st.sampled_from(sorted(prompt)), st.sampled_from(["99", "0", "x", " 1", "01"])))
    known = SPECS[prompt[node_id]["class_type"]] if node_id in prompt else {}
    input_name = draw(st.one_of(st.sampled_from(sorted(known) or ["seed"]), st.sampled_from(["seed", "steps", "stepz", ""]),
                                st.text(alphabet=st.characters(exclude_characters="="), max_size=8)))
    value = draw(st.one_of(st.sampled_from(["1", "2", "-1", "1e999", "NaN", "Infinity", "[\"1\", 0]", "[1, 2, 3]", "{}",
                                            '"x"', "null", "true", "", "euler", "../x", "/etc/x", "\"\\u0000\"",
                                            "9" * 400, "1" * 5000, "[" * 3000, "sld_demo.safetensors"]),
                           st.text(max_size=12),
                           st.just(dumps(prompt.get(node_id, {}).get("inputs", {}).get(input_name))),
                           st.integers(0, 3).map(str)))
    doc = copy.deepcopy(UI_BASES[name] if ui else prompt)
    overrides = [f"{node_id}.{input_name}={value}"]
    if not input_name:  # not NODE_ID.INPUT=VALUE at all
        return Case("ui" if ui else "api", name, doc, Expect("invalid", {FILE}, overrides[0]), overrides)
    verdict = "invalid" if node_id not in prompt or input_name not in known else "either"
    return Case("ui" if ui else "api", name, doc, Expect(verdict, {(node_id, input_name)}, overrides[0]), overrides)
