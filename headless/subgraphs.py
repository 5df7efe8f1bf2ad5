"""Subgraphs of UI-format workflows (`definitions.subgraphs`, ComfyUI frontend 1.24+) expanded into one
flat UI graph, the way the frontend's graphToPrompt flattens them before "Save (API)".

A node whose `type` is a subgraph id is an instance. Its inner nodes get the frontend's execution ids,
"instance:inner" ("5:3"; nested "5:7:3"). Inside a definition, links from node -10 (the subgraph's input
node) stand for whatever feeds the instance's input of that index: the outer link, or, for an
unconnected input, the value of the widget the instance promotes for it; a definition output (links to
node -20) is what the inner origin of its first link gives. The flat graph then goes through the plain
UI→API conversion, so reroutes, primitives, muted and bypassed nodes inside subgraphs behave as anywhere.

Decisions where saved files and frontends differ (docs/headless.md has the user-facing text):
- An instance's inputs are matched to the definition's inputs by name, as the frontend's
  SubgraphNode.configure does; saved instances often list only some of them.
- Promoted widget values: an instance's `widgets_values` are positional over the definition inputs
  whose first inner target is a widget input, and are used only when they are exactly that many (what
  the frontend writes); otherwise, and with `properties.proxyWidgets` (newer frontends: the values live
  in the inner nodes, the instance stores none), the inner node's own widget value stands.
- A muted or bypassed instance is not expanded: its inner nodes do not run, and links through it are
  dropped (muted) or pass through to its input of the same type (bypassed), as for any node.
- Errors name the instance on the canvas and the path inside it; --set takes execution ids.
- Group nodes (the older "workflow>Name" nodes) are expanded before this, by group_nodes.py.
"""
import re

from .errors import WorkflowError
from .ui_links import is_id, link_fields
from .widgets import widget_slots

INPUT_NODE, OUTPUT_NODE = -10, -20
MUTED, BYPASSED = 2, 4
MAX_DEPTH = 32  # subgraphs inside subgraphs; far deeper than any saved workflow
MAX_NODES = 20_000  # after expansion: instances of instances multiply
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def definitions(ui):
    """{subgraph id: definition} of a UI workflow; odd entries are ignored (they define nothing)."""
    found = ui.get("definitions") if isinstance(ui.get("definitions"), dict) else {}
    found = found.get("subgraphs") if isinstance(found.get("subgraphs"), list) else []
    return {s["id"]: s for s in found if isinstance(s, dict) and isinstance(s.get("id"), str)}


def expand(ui):
    """(flat UI workflow, {flat node id: {input: promoted widget value}}). A workflow without subgraph
    instances is returned as it is."""
    flat = _flatten(ui)
    return (ui, {}) if flat is None else (dict(ui, nodes=flat.nodes, links=flat.finish_links()), flat.promoted)


def _flatten(ui):
    subgraphs = definitions(ui)
    nodes = ui.get("nodes")
    if not isinstance(nodes, list) or not any(isinstance(n, dict) and _is_instance(n.get("type"), subgraphs)
                                              for n in nodes):
        return None
    flat = _Flattener(subgraphs)
    flat.graph(nodes, ui.get("links"), prefix="", feeds=None, context=None)
    return flat


def _is_instance(kind, subgraphs):
    return isinstance(kind, str) and (kind in subgraphs or bool(UUID.match(kind)))


class _Context:
    """Where inside which instance the flattener is, for messages naming the node the user sees."""

    def __init__(self, root_id, names, subgraph, feeds):
        self.root_id, self.names, self.subgraph, self.feeds = root_id, names, subgraph, feeds

    def error(self, inner_id=None, input_name=None, problem=""):
        where = f"subgraph {' › '.join(repr(n) for n in self.names)}"
        if inner_id is not None:
            where += f", inner node {inner_id}" + (f", input {input_name!r}" if input_name else "")
        return WorkflowError(self.root_id, None, f"{where}: {problem}")


class _Flattener:
    def __init__(self, subgraphs):
        self.subgraphs = subgraphs
        self.nodes = []  # the flat UI nodes
        self.links = []  # the flat UI links (top-level entries kept as they are)
        self.outputs = {}  # {expanded instance's flat id: [origin per definition output]}
        self.promoted = {}
        self.stack = []  # definition ids being expanded, to refuse recursion
        self.checked = {}  # {definition id: its checked parts}
        self.sources = {}  # {(flat id, input): (instance flat id, its promoted widget)} for --set

    # -- one graph (the root or a definition), its nodes under `prefix` ------------------------------
    def graph(self, nodes, links, prefix, feeds, context):
        local = self._local_links(links, prefix, context)
        seen = set()
        for index, node in enumerate(nodes):
            if not isinstance(node, dict) or not is_id(node.get("id")):
                if context is None:  # the plain conversion names it
                    self.nodes.append(node)
                    continue
                raise context.error(problem=f"nodes[{index}] has no id: {node!r:.80}")
            flat_id = f"{prefix}{node['id']}"
            if context is not None and flat_id in seen:
                raise context.error(flat_id, problem="two inner nodes have this id")
            seen.add(flat_id)
            slots = node.get("inputs") or []
            if not isinstance(slots, list) or not all(isinstance(slot, dict) for slot in slots):
                if context is None:
                    self.nodes.append(node)
                    continue
                raise context.error(flat_id, problem=f"its inputs must be a list of slots, got {slots!r:.80}")
            feeds_in = {i: self._feed(slot, local, feeds, context, flat_id) for i, slot in enumerate(slots)}
            if _is_instance(node.get("type"), self.subgraphs) and node.get("mode", 0) not in (MUTED, BYPASSED):
                self._instance(node, flat_id, feeds_in, context)
                continue
            copy = dict(node, id=flat_id if context is not None else node["id"], inputs=[dict(s) for s in slots])
            for i, slot in enumerate(copy["inputs"]):
                kind, value = (feeds_in[i] or (None, None))[:2]
                if kind == "value" and isinstance(slot.get("name"), str):
                    self.promoted.setdefault(flat_id, {})[slot["name"]] = value
                    self.sources[(flat_id, slot["name"])] = feeds_in[i][2]
                if "link" in slot or kind is not None:
                    slot["link"] = value if kind == "link" else None
            self.nodes.append(copy)
            if context is not None and len(self.nodes) > MAX_NODES:
                raise context.error(problem=f"expanding the subgraphs gives more than {MAX_NODES} nodes")

    def _local_links(self, links, prefix, context):
        """{local link id: flat link id} of one graph, and its links added to the flat list."""
        if context is None:  # the root: entries kept, checked by the plain conversion
            self.links = list(links) if isinstance(links, list) else links
            return {}
        local = {}  # a definition's links were checked with it
        for link_id, (origin, slot) in context.subgraph["links_by_id"].items():
            local[link_id] = f"{prefix}#{link_id}"
            if origin != INPUT_NODE:
                self.links.append({"id": local[link_id], "origin_id": f"{prefix}{origin}", "origin_slot": slot})
        return local

    def _feed(self, slot, local, feeds, context, flat_id):
        """What feeds one input slot: ("link", flat link id), ("value", promoted value, (instance flat id,
        widget name)) or None."""
        link = slot.get("link")
        if link is None:
            return None
        if context is None:
            return ("link", link)  # the plain conversion checks it
        if isinstance(link, bool) or not is_id(link) or link not in local:
            raise context.error(flat_id, slot.get("name"), f"its link {link!r:.40} is not in the subgraph's links "
                                                           "(a dangling link)")
        origin, origin_slot = context.subgraph["links_by_id"][link]
        if origin != INPUT_NODE:
            return ("link", local[link])
        if origin_slot >= len(context.subgraph["inputs"]) or origin_slot < 0:
            count = len(context.subgraph["inputs"])
            raise context.error(flat_id, slot.get("name"), f"its link {link} comes from subgraph input {origin_slot}, "
                                                           f"but the subgraph has {count} inputs")
        return feeds.get(context.subgraph["inputs"][origin_slot]["name"])

    # -- an instance -----------------------------------------------------------------------------------
    def _instance(self, node, flat_id, feeds_in, context):
        names = (context.names if context else [])
        root_id = context.root_id if context else node["id"]
        definition = self.subgraphs.get(node["type"])
        if definition is None:
            message = (f"is an instance of subgraph {node['type']}, but the workflow's definitions.subgraphs "
                       "has no subgraph with that id")
            raise context.error(flat_id, problem=message) if context else WorkflowError(flat_id, None, message)
        name = definition.get("name") if isinstance(definition.get("name"), str) else node["type"]
        inner = _Context(root_id, names + [name], None, None)
        if node["type"] in self.stack or len(self.stack) >= MAX_DEPTH:
            chain = " › ".join(repr(self._name(s)) for s in self.stack + [node["type"]])
            problem = (f"an instance of {name!r}, so the subgraph contains itself ({chain})"
                       if node["type"] in self.stack else f"subgraphs nested more than {MAX_DEPTH} deep")
            raise context.error(flat_id, problem=problem)  # never at the root: the stack is empty there
        if node["type"] not in self.checked:
            self.checked[node["type"]] = _checked_definition(definition, inner)
        inner.subgraph = self.checked[node["type"]]
        slots = node.get("inputs") or []
        inputs = [i["name"] for i in inner.subgraph["inputs"]]
        feeds = {}
        for i, slot in enumerate(slots):
            slot_name = slot.get("name")
            if slot_name not in inputs:
                if feeds_in[i] is not None:
                    raise inner.error(problem=f"the instance's input {slot_name!r} is connected, but the subgraph "
                                              f"has no input of that name (its inputs: {', '.join(inputs) or 'none'})")
                continue
            feeds[slot_name] = feeds_in[i]
        for input_name, value in _promoted_values(node, inner.subgraph).items():
            if feeds.get(input_name) is None:
                feeds[input_name] = ("value", value, (flat_id, input_name))
        inner.feeds = feeds
        self.stack.append(node["type"])
        self.graph(inner.subgraph["nodes"], inner.subgraph["links"], f"{flat_id}:", feeds, inner)
        self.stack.pop()
        self.outputs[flat_id] = [self._output(o, f"{flat_id}:", inner) for o in inner.subgraph["outputs"]]

    def _name(self, subgraph_id):
        name = self.subgraphs.get(subgraph_id, {}).get("name")
        return name if isinstance(name, str) else subgraph_id

    def _output(self, output, prefix, inner):
        """What one definition output gives: ("node", flat id, slot), ("link", flat link id) for an input
        passed straight through, ("value", v) or None when nothing inside is connected to it, or
        ("error", WorkflowError) when it is broken."""
        for link_id in output["linkIds"][:1]:
            if link_id not in inner.subgraph["links_by_id"]:  # an error only if something uses the output
                return ("error", inner.error(problem=f"its output {output['name']!r} is connected outside, but "
                                                     f"names link {link_id!r:.40}, which is not in the subgraph's "
                                                     "links (a dangling link)"))
            origin, slot = inner.subgraph["links_by_id"][link_id]
            if origin == INPUT_NODE:
                if not 0 <= slot < len(inner.subgraph["inputs"]):
                    raise inner.error(problem=f"its output {output['name']!r} comes from subgraph input {slot}, "
                                              f"but the subgraph has {len(inner.subgraph['inputs'])} inputs")
                return inner.feeds.get(inner.subgraph["inputs"][slot]["name"])
            if str(origin) not in inner.subgraph["node_ids"]:
                raise inner.error(problem=f"its output {output['name']!r} comes from node {origin!r:.40}, which is "
                                          "not in the subgraph (a dangling link)")
            return ("node", f"{prefix}{origin}", slot)
        return None

    # -- links out of expanded instances point at their inner origins ---------------------------------
    def finish_links(self):
        if not isinstance(self.links, list):
            return self.links
        by_id = {}
        for link in self.links:
            fields = link_fields(link)
            if fields:
                by_id[fields[0]] = (str(fields[1]), fields[2])
        out = []
        for link in self.links:
            fields = link_fields(link)
            if fields is None or str(fields[1]) not in self.outputs:
                out.append(link)
                continue
            origin = self._origin(fields[0], by_id)
            if origin is not None:  # else nothing inside gives that output: the input stays unconnected
                out.append({"id": fields[0], "origin_id": origin[0], "origin_slot": origin[1]})
        return out

    def _origin(self, link_id, by_id):
        """The real (flat origin id, slot) behind a link, through the outputs of expanded instances."""
        seen = set()
        origin, slot = by_id[link_id]
        while origin in self.outputs and (origin, slot) not in seen:
            seen.add((origin, slot))
            outputs = self.outputs[origin]
            given = outputs[slot] if 0 <= slot < len(outputs) else None
            if given is None or given[0] == "value":
                return None
            if given[0] == "error":
                raise given[1]
            if given[0] == "link":
                if given[1] not in by_id:
                    return None
                origin, slot = by_id[given[1]]
            else:
                origin, slot = given[1], given[2]
        return None if origin in self.outputs else (origin, slot)


def _checked_definition(definition, context):
    """The parts of a definition the expansion reads, checked: nodes, links, inputs and outputs (each
    with a name and its linkIds)."""
    nodes = definition.get("nodes")
    if not isinstance(nodes, list):
        raise context.error(problem=f"its definition has no list of nodes (got {nodes!r:.60})")
    links = definition.get("links") if definition.get("links") is not None else []
    if not isinstance(links, list):
        raise context.error(problem=f"its links must be a list, got {links!r:.60}")
    links_by_id = {}
    for link in links:
        fields = link_fields(link)
        if fields is None:
            raise context.error(problem=f"a malformed link: {link!r:.80}")
        links_by_id[fields[0]] = (fields[1], fields[2])
    checked = {"nodes": nodes, "links": links, "links_by_id": links_by_id,
               "node_ids": {str(n["id"]) for n in nodes if isinstance(n, dict) and is_id(n.get("id"))}}
    for side in ("inputs", "outputs"):
        slots = definition.get(side) if definition.get(side) is not None else []
        named = isinstance(slots, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in slots)
        if not named:
            raise context.error(problem=f"its {side} must be a list of named slots, got {slots!r:.80}")
        for slot in slots:
            ids = slot.get("linkIds") if slot.get("linkIds") is not None else []
            if not isinstance(ids, list):
                raise context.error(problem=f"the linkIds of its {side[:-1]} {slot['name']!r} must be a list")
        checked[side] = [dict(s, linkIds=s.get("linkIds") or []) for s in slots]
    for link_id, (origin, _) in links_by_id.items():
        if origin != INPUT_NODE and str(origin) not in checked["node_ids"]:
            raise context.error(problem=f"its link {link_id} comes from node {origin!r:.40}, which is not in the "
                                        "subgraph (a dangling link)")
    return checked


def _promoted_values(node, subgraph):
    """{definition input name: value} of the widgets an instance promotes, read from its widgets_values
    (see the module docstring for when they count)."""
    values = node.get("widgets_values")
    if not isinstance(values, list) or not values:
        return {}
    by_id = {str(n["id"]): n for n in subgraph["nodes"] if isinstance(n, dict) and is_id(n.get("id"))}
    targets = {}
    for link in subgraph["links"]:
        if isinstance(link, dict):
            targets[link.get("id")] = (link.get("target_id"), link.get("target_slot"))
        elif isinstance(link, list) and len(link) >= 5:
            targets[link[0]] = (link[3], link[4])
    promoted = []
    for slot in subgraph["inputs"]:
        for link_id in slot["linkIds"][:1]:
            target, index = targets.get(link_id, (None, None))
            inputs = (by_id.get(str(target)) or {}).get("inputs")
            if (isinstance(inputs, list) and isinstance(index, int) and 0 <= index < len(inputs)
                    and isinstance(inputs[index], dict) and inputs[index].get("widget")):
                promoted.append(slot["name"])
    return dict(zip(promoted, values)) if len(promoted) == len(values) else {}


# --- --set on subgraphs -------------------------------------------------------------------------------

def set_input(workflow, node_id, input_name, value, registry):
    """`--set NODE_ID.INPUT=VALUE` where NODE_ID is a subgraph instance or a node inside one. Returns
    True when done here; False when the plain override (on the prompt) should follow, after the inner
    node's value was written into its definition in the UI graph (shared by every instance of it).
    An inner input whose value comes from a promoted widget is set on the instance that promotes it."""
    try:
        flat = _flatten(workflow.ui) if isinstance(workflow.ui, dict) else None
    except WorkflowError:  # e.g. a PNG whose prompt runs but whose UI graph is damaged
        return False
    if flat is None:
        return False
    if node_id in flat.outputs:  # an expanded instance: its promoted widgets
        return _set_promoted(workflow, flat, node_id, input_name, value)
    if ":" not in node_id or node_id not in workflow.prompt:
        return False
    source = flat.sources.get((node_id, input_name))
    if source is not None:
        raise WorkflowError(node_id, input_name, f"--set: this input takes its value from the widget "
                                                 f"{source[1]!r} of subgraph node {source[0]}; set that one: "
                                                 f"--set {source[0]}.{source[1]}=...")
    node = _ui_node(workflow.ui, node_id)
    if node is not None:
        _write_widget(node, input_name, value, registry.get(workflow.prompt[node_id].get("class_type")))
    return False


def _set_promoted(workflow, flat, node_id, input_name, value):
    instance = _ui_node(workflow.ui, node_id)
    promoted = list(_promoted_values(instance, flat.checked[instance["type"]]))
    if input_name not in promoted:
        shown = ", ".join(promoted) or "none it stores values for (set the inner node, e.g. --set 5:3.seed=...)"
        raise WorkflowError(node_id, input_name, f"--set: subgraph node {node_id} has no promoted widget "
                                                 f"{input_name!r}; its promoted widgets: {shown}")
    index = promoted.index(input_name)
    old, instance["widgets_values"][index] = instance["widgets_values"][index], value
    targets = [key for key, source in _flatten(workflow.ui).sources.items()
               if source == (node_id, input_name) and key[0] in workflow.prompt]
    if not targets:  # its subgraph input is connected: what feeds it from outside wins
        instance["widgets_values"][index] = old
        raise WorkflowError(node_id, input_name, "--set: this promoted widget feeds nothing: the instance's input "
                                                 "is connected (set what feeds it)")
    for target, name in targets:
        workflow.prompt[target]["inputs"][name] = {"__value__": value} if isinstance(value, list) else value
    return True


def _ui_node(ui, node_id):
    """The UI node dict behind an execution id ("5", "5:3", "5:7:3"), through the definitions."""
    subgraphs, nodes, node = definitions(ui), ui["nodes"], None
    for part in node_id.split(":"):
        if node is not None:
            subgraph = subgraphs.get(node.get("type"))
            nodes = subgraph.get("nodes") if isinstance(subgraph, dict) else None
        node = next((n for n in nodes or [] if isinstance(n, dict) and str(n.get("id")) == part), None)
        if node is None:
            return None
    return node


def _write_widget(node, input_name, value, cls):
    values = node.get("widgets_values")
    if isinstance(values, dict):
        values[input_name] = value
    elif isinstance(values, list) and cls is not None and input_name in widget_slots(cls, values):
        values[widget_slots(cls, values)[input_name]] = value


def located(error, ui):
    """A WorkflowError about an inner node ("10:7:3"), said of the node on the canvas (10) with the
    path of subgraphs to it; other errors as they are."""
    node_id = error.node_id
    if not isinstance(node_id, str) or ":" not in node_id or not isinstance(ui.get("nodes"), list):
        return error
    subgraphs, names, node = definitions(ui), [], None
    parts = node_id.split(":")
    for depth in range(1, len(parts)):
        node = _ui_node(ui, ":".join(parts[:depth]))
        subgraph = subgraphs.get(node.get("type")) if isinstance(node, dict) else None
        if subgraph is None:
            return error
        names.append(repr(subgraph["name"]) if isinstance(subgraph.get("name"), str) else subgraph["id"])
    where = f"subgraph {' › '.join(names)}, inner node {node_id}"
    where += f", input {error.input_name!r}" if error.input_name else ""
    return WorkflowError(parts[0], None, f"{where}: {error.message}")
