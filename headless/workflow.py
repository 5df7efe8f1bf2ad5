"""Workflow files: API format, UI format (ComfyUI's "workflow", schema 0.4 and 1) and PNGs carrying
them, turned into one API-format prompt `{node_id: {"class_type", "inputs"}}`.

UI→API conversion follows the ComfyUI frontend's graphToPrompt: muted (mode 2) and virtual nodes
(notes, reroutes, primitives) are left out, links through reroutes and bypassed (mode 4) nodes are
followed to the real source, and `widgets_values` are read positionally over the node's widget inputs
(required then optional), skipping the extra `control_after_generate` value the frontend stores after
a seed widget; trailing extras such as LoadImage's upload-button value are ignored. Group nodes
(group_nodes.py) and subgraph instances (subgraphs.py) are first expanded into their inner nodes, with
execution ids such as "9:3" and "5:3".
"""
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import group_nodes, primitives, subgraphs
from .errors import WorkflowError
from .ui_links import is_id, raw_link_fields
from .widgets import widget_inputs, widget_slots

MUTED, BYPASSED = 2, 4
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Workflow:
    """An API-format prompt, plus the UI-format workflow it came from (None for API files)."""

    prompt: dict
    ui: Optional[dict]
    source: str


def is_link(value):
    """Whether an input value is a link `[node_id, output_index]` (the one test for it)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def load_workflow(path, registry):
    """Read a workflow JSON file (API or UI format) or a PNG saved by ComfyUI or `sld run`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise WorkflowError(None, None, f"cannot read {path}: {error.strerror or error}") from None
    if raw.startswith(PNG_SIGNATURE):
        return _from_png(path, registry)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise WorkflowError(None, None, f"{path} is not a text (UTF-8 JSON) file") from None
    except json.JSONDecodeError as error:
        raise WorkflowError(None, None, f"{path} is not valid JSON: {error.msg} at line {error.lineno}, "
                                        f"column {error.colno}") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise WorkflowError(None, None, f"{path} is not valid JSON: {error}") from None
    except RecursionError:
        raise WorkflowError(None, None, f"{path} is nested too deeply to be a workflow") from None
    return parse_workflow(data, registry, str(path))


def _from_png(path, registry):
    from ..nodes.png import read_text_chunks

    try:
        chunks = read_text_chunks(path)
    except Exception as error:  # PIL raises many types for damaged files
        raise WorkflowError(None, None, f"cannot read PNG {path}: {error}") from None
    if isinstance(chunks.get("prompt"), dict):  # the exact graph that made the image
        check_depth(chunks["prompt"])
        ui = chunks.get("workflow") if isinstance(chunks.get("workflow"), dict) else None
        return Workflow(_api_prompt(chunks["prompt"]), ui, str(path))
    if isinstance(chunks.get("workflow"), dict):
        return parse_workflow(chunks["workflow"], registry, str(path))
    raise WorkflowError(None, None, f"{path} has no ComfyUI 'prompt' or 'workflow' metadata")


def parse_workflow(data, registry, source="<workflow>"):
    """A `Workflow` from decoded JSON: UI format, API format or a POST /prompt body."""
    check_depth(data)
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        return Workflow(ui_to_api(data, registry), data, source)
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):  # a /prompt request body
        extra = data.get("extra_data") if isinstance(data.get("extra_data"), dict) else {}
        extra = extra.get("extra_pnginfo") if isinstance(extra.get("extra_pnginfo"), dict) else {}
        ui = extra.get("workflow") if isinstance(extra.get("workflow"), dict) else None
        return Workflow(_api_prompt(data["prompt"]), ui, source)
    if isinstance(data, dict) and data and (all(isinstance(v, dict) for v in data.values())
                                            or any(isinstance(v, dict) and "class_type" in v for v in data.values())):
        return Workflow(_api_prompt(data), None, source)  # validation names each node that is not an object
    raise WorkflowError(None, None, f"{source} is not a ComfyUI workflow: expected API format "
                                    "({id: {class_type, inputs}}) or UI format ({nodes, links, ...})")


# Far deeper than any workflow; keeps every later step (copies, checks, cache keys) clear of Python's
# recursion limit, which a JSON file can otherwise reach with a value such as [[[[...]]]].
MAX_DEPTH = 64


def check_depth(data, limit=MAX_DEPTH):
    """Refuse a document with a value nested deeper than `limit`, naming the node and input holding it."""
    stack = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > limit:
            node_id, input_name, where = _node_and_input(data, path)
            raise WorkflowError(node_id, input_name, f"{where}a value nested too deeply (more than {limit} levels)")
        if isinstance(value, dict):
            stack.extend((v, path + (k,)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, path + (i,)) for i, v in enumerate(value))


def _node_and_input(data, path):
    """(node id, input name, a prefix for the message) that a path into an API, UI or /prompt document
    leads through, where known."""
    if path[0] == "prompt" and isinstance(data.get("prompt"), dict) and not isinstance(data.get("nodes"), list):
        data, path = data["prompt"], path[1:]
    if path[0] == "nodes" and isinstance(data.get("nodes"), list):  # UI format: the node, not the widget
        node = data["nodes"][path[1]]
        if isinstance(node, dict) and is_id(node.get("id")):
            return node["id"], None, ""
        return None, None, f"nodes[{path[1]}]: "
    if path[1] == "inputs" and isinstance(data.get(path[0]), dict):  # API format
        return path[0], path[2], ""
    return None, None, ""


def _api_prompt(prompt):
    """A copy with string node ids and links as [str id, index], as ComfyUI's frontend sends them."""
    out = {}
    for node_id, node in prompt.items():
        node = copy.deepcopy(node)
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            node["inputs"] = {k: [str(v[0]), v[1]] if is_link(v) else v for k, v in node["inputs"].items()}
        out[str(node_id)] = node
    return out


# --- UI format --------------------------------------------------------------------------------------

def ui_to_api(ui, registry):
    """Convert a UI-format workflow into an API-format prompt (see the module docstring)."""
    grouped, values = group_nodes.expand(ui, registry)  # group nodes become their inner nodes, ids "9:3"
    flat, promoted = subgraphs.expand(grouped)  # subgraph instances become their inner nodes, ids "5:3"
    try:
        return _flat_to_api(flat, {**values, **promoted}, registry)
    except WorkflowError as error:  # one about an inner node names the node on the canvas
        raise group_nodes.located(subgraphs.located(error, ui), ui) from None


def _flat_to_api(ui, promoted, registry):
    nodes = _ui_nodes(ui["nodes"])
    links, malformed = _links(ui.get("links"))
    prompt = {}
    for node_id, node in nodes.items():
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        inputs = _widget_values(node_id, node, registry.get(node["type"]))
        inputs.update({name: _wrap(value) for name, value in promoted.get(node_id, {}).items()})
        for slot in node["inputs"]:
            if slot.get("link") is None:
                continue
            if not isinstance(slot.get("name"), str):
                raise WorkflowError(node_id, None, f"an input slot without a name: {shown(slot)}")
            if slot["link"] in malformed:
                raise WorkflowError(node_id, slot["name"], f"its link {slot['link']} is malformed: "
                                                           f"{shown(malformed[slot['link']])}")
            source = _resolve(nodes, links, slot["link"])
            if source is not None:
                inputs[slot["name"]] = list(source)
        entry = {"class_type": node["type"], "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[node_id] = entry
    return prompt


def _ui_nodes(raw):
    """{node id: node} with the shape the conversion relies on checked (ids, types, slot lists)."""
    nodes = {}
    for index, node in enumerate(raw):
        node_id = node.get("id") if isinstance(node, dict) else None
        if not isinstance(node_id, (str, int)) or isinstance(node_id, bool):
            raise WorkflowError(None, None, f"nodes[{index}] has no id (every UI workflow node needs one): {shown(node)}")
        node_id = str(node_id)
        if node_id in nodes:
            raise WorkflowError(node_id, None, f"two nodes have the id {node_id} (nodes[{index}] and another)")
        if not isinstance(node.get("type"), str):
            raise WorkflowError(node_id, None, f"its type must be a node name, got {shown(node.get('type'))}")
        slots = node.get("inputs") or []
        if not isinstance(slots, list) or not all(isinstance(slot, dict) for slot in slots):
            raise WorkflowError(node_id, None, f"its inputs must be a list of slots, got {shown(slots)}")
        for slot in slots:
            link = slot.get("link")
            if link is not None and (isinstance(link, bool) or not isinstance(link, (int, str))):
                raise WorkflowError(node_id, slot.get("name") if isinstance(slot.get("name"), str) else None,
                                    f"a link id must be a number, got {shown(link)}")
        nodes[node_id] = dict(node, inputs=slots)
    return nodes


def _links(raw):
    """({link id: (origin id, origin slot)}, {link id: entry} of malformed ones) from 0.4 arrays or
    schema-1 objects. Malformed entries only matter (and are reported) when a node input uses them."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, list):
        raise WorkflowError(None, None, f"is not a ComfyUI workflow: its links must be a list, got {shown(raw)}")
    links, malformed = {}, {}
    for link in raw:
        fields = raw_link_fields(link)
        if fields is None:
            continue
        link_id, origin, slot = fields
        if isinstance(link_id, bool) or not isinstance(link_id, (int, str)):
            continue
        if is_id(origin) and isinstance(slot, int) and not isinstance(slot, bool):
            links[link_id] = (origin, slot)
        else:
            malformed[link_id] = link
    return links, malformed


def shown(value, limit=80):
    """`value` as it appears in a message: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _widget_values(node_id, node, cls):
    values = node.get("widgets_values")
    if cls is None or values is None:
        return {}
    if isinstance(values, dict):  # some nodes store widgets by name
        names = {name for name, _ in widget_inputs(cls)}
        return {k: v for k, v in values.items() if k in names}
    if not isinstance(values, list):
        raise WorkflowError(node_id, None, f"its widgets_values must be a list, got {shown(values)}")
    return {name: _wrap(values[i]) for name, i in widget_slots(cls, values).items()}


def _wrap(value):
    return {"__value__": value} if isinstance(value, list) else value


def _resolve(nodes, links, link_id):
    """The real (node id, output slot) behind a link, through reroutes and bypassed nodes; None when
    the source is muted, a primitive (its value is already in the widget) or not connected. A loop
    (or a chain of any length) of reroutes is followed without recursion."""
    seen = set()
    while link_id in links and link_id not in seen:
        seen.add(link_id)
        origin_id, slot = links[link_id]
        origin = nodes.get(str(origin_id))
        if origin is None:
            return (str(origin_id), slot)  # validation reports the missing node
        if origin["type"] == "PrimitiveNode" or origin.get("mode", 0) == MUTED:
            return None
        if origin["type"] == "Reroute":
            link_id = origin["inputs"][0].get("link") if origin["inputs"] else None
        elif origin.get("mode", 0) == BYPASSED:
            link_id = _bypass_link(origin, slot)
        else:
            return (str(origin_id), slot)
    return None


def _bypass_link(node, slot):
    """A bypassed node passes through its input of the same type as the output (same slot first)."""
    outputs = node.get("outputs") if isinstance(node.get("outputs"), list) else []
    output = outputs[slot] if 0 <= slot < len(outputs) and isinstance(outputs[slot], dict) else {}
    kind = output.get("type")
    inputs = node["inputs"]
    candidates = ([inputs[slot]] if 0 <= slot < len(inputs) else []) + inputs
    for candidate in candidates:
        if candidate.get("type") == kind and candidate.get("link") is not None:
            return candidate["link"]
    return None


# --- overrides --------------------------------------------------------------------------------------

def parse_override(text):
    """'NODE_ID.INPUT=VALUE' -> (node id, input, value); VALUE is JSON when it parses, else a string."""
    target, sep, raw = text.partition("=")
    node_id, dot, input_name = target.partition(".")
    if not sep or not dot or not node_id or not input_name:
        raise WorkflowError(None, None, f"--set {shown(text)}: expected NODE_ID.INPUT=VALUE, e.g. --set 3.seed=42")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = raw
    try:
        check_depth(value)
    except WorkflowError as error:
        raise WorkflowError(node_id, input_name, f"--set: {error.message}") from None
    return node_id, input_name, value


def set_input(workflow, node_id, input_name, value, registry):
    """Override a widget value in the prompt and, for UI workflows, in the stored UI graph too (so the
    `workflow` metadata of the result reproduces it in ComfyUI)."""
    if workflow.ui is not None and group_nodes.set_input(workflow, node_id, input_name, value, registry):
        return  # a widget of a group node
    if workflow.ui is not None and subgraphs.set_input(workflow, node_id, input_name, value, registry):
        return  # a widget promoted to a subgraph node
    if workflow.ui is not None and primitives.set_input(workflow, node_id, input_name, value, registry):
        return  # a primitive node and the widgets it drives
    node = workflow.prompt.get(node_id)
    if not isinstance(node, dict):
        raise WorkflowError(node_id, input_name, f"--set: the workflow has no node {node_id}")
    cls = registry.get(node.get("class_type"))
    if cls is not None:
        widgets = [name for name, _ in widget_inputs(cls)]
        if input_name not in widgets:
            raise WorkflowError(node_id, input_name, f"--set: {node.get('class_type')} has no widget input "
                                                     f"{input_name!r}; its widgets are {', '.join(widgets)}")
    if is_link(node.get("inputs", {}).get(input_name)):
        raise WorkflowError(node_id, input_name, "--set: this input is connected to another node's output")
    node.setdefault("inputs", {})[input_name] = value
    if workflow.ui is not None and cls is not None:
        _set_ui_widget(workflow.ui, node_id, input_name, value, cls)


def _set_ui_widget(ui, node_id, input_name, value, cls):
    for node in ui["nodes"]:
        if str(node.get("id")) != node_id:
            continue
        values = node.get("widgets_values")
        if isinstance(values, dict):
            values[input_name] = value
        elif isinstance(values, list) and input_name in widget_slots(cls, values):
            values[widget_slots(cls, values)[input_name]] = value
