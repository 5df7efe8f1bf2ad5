"""Group nodes of UI-format workflows (the frontend's older "workflow>Name" nodes; "workflow/Name" in
files from before frontend 1.2.63), expanded into their inner nodes before the UI→API conversion, as the
frontend's group-node extension does for "Save (API)".

A group node's definition is `extra.groupNodes[Name]`: `nodes` (inner nodes, known by their index),
`links` ([origin index, origin slot, target index, target slot, ...]; an origin of null was a link from
outside when the group was made and means nothing now), `external` ([index, output slot, type]: inner
outputs that were used outside) and an optional `config` ({index: {"input": {name: {name, visible}},
"output": {slot: {name, visible}}}}) from "Manage Group Node". The frontend builds the group node's
inputs and widgets from the inner nodes in order; `_Layout` repeats those rules so that the instance's
`widgets_values` (positional, with the extra "control after generate" values) and its input names
(matched by name: saved files list only the connected inputs) mean what they meant in the frontend.
Inner nodes get the frontend's execution ids, "group id:inner index" ("9:3"); what a group output
gives is its inner node's output, so links out of the group start there. Reroutes, primitives,
muted and bypassed nodes inside the group then go through the plain conversion as anywhere.

Decisions where the frontend (1.27.10, the one ComfyUI 0.3.64 ships) does something else, all seen in
its graphToPrompt on files it made (tests/fixtures/group_nodes): it drops an inner input fed through a
reroute inside the group or by another group node (ComfyUI then refuses the prompt); on an inner
node with ten or more input slots it pairs widget sockets with the wrong inner inputs and can send an
inner primitive's value to the wrong widget. Here links and primitive values follow the links the
definition stores, by input name. The widget layout keeps the frontend's order, oddities included,
because that is how the saved values are placed. A muted or bypassed group node is not expanded (as
with older frontends and subgraphs); group nodes inside subgraphs are refused, as the frontend does.
"""
from .errors import WorkflowError
from .ui_links import is_id, raw_link_fields
from .widgets import WIDGET_TYPES, widget_inputs, widget_slots

PREFIXES = ("workflow>", "workflow/")
MUTED, BYPASSED = 2, 4
VIRTUAL = {"Note", "MarkdownNote"}  # the frontend leaves them out of the group's inputs and outputs


def group_name(kind):
    """The definition name of a group node type ("workflow>Name" -> "Name"), else None."""
    if isinstance(kind, str) and kind.startswith(PREFIXES):
        return kind[len("workflow>"):]
    return None


def expand(ui, registry):
    """(UI workflow with its group nodes replaced by their inner nodes, {flat node id: {input: value}}
    of the group widgets' values). A workflow without group nodes is returned as it is."""
    nodes = ui.get("nodes")
    nodes = nodes if isinstance(nodes, list) else []
    _refuse_groups_in_subgraphs(ui)
    if not any(_is_active_group(n) for n in nodes):
        return ui, {}
    layouts, flat, inner_links, values, outputs = {}, [], [], {}, {}
    for node in nodes:
        if not _is_active_group(node):
            flat.append(node)
            continue
        group_id, name = str(node["id"]), group_name(node["type"])
        if name not in layouts:  # a malformed definition is named at its first instance
            layouts[name] = _Layout(name, _definition(ui, node), registry, group_id)
        layout = layouts[name]
        own_nodes, own_links = layout.inner_nodes(group_id, node)
        flat.extend(own_nodes)
        inner_links.extend(own_links)
        outputs[group_id] = (name, [(f"{group_id}:{i}", slot) for i, slot in layout.outputs])
        for flat_id, named in layout.values(group_id, node).items():
            values.setdefault(flat_id, {}).update(named)
    links = ui.get("links")
    if isinstance(links, list):  # else the plain conversion says what is wrong with it
        links = [_from_inner_origin(link, outputs) for link in links] + inner_links
    return dict(ui, nodes=flat, links=links), values


def _is_active_group(node):
    return (isinstance(node, dict) and group_name(node.get("type")) is not None and is_id(node.get("id"))
            and node.get("mode", 0) not in (MUTED, BYPASSED))


def _is_index(value, size=None):
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return ok and (size is None or value < size)


def _definition(ui, node):
    name = group_name(node["type"])
    extra = ui.get("extra") if isinstance(ui.get("extra"), dict) else {}
    found = extra.get("groupNodes") if isinstance(extra.get("groupNodes"), dict) else {}
    if name not in found:
        raise WorkflowError(node["id"], None, f"is a group node ({node['type']!r}), but the workflow's "
                                              f"extra.groupNodes has no definition {name!r}")
    return found[name]


def _refuse_groups_in_subgraphs(ui):
    """The frontend refuses group nodes inside subgraphs; say so at the subgraph node on the canvas."""
    found = ui.get("definitions") if isinstance(ui.get("definitions"), dict) else {}
    found = found.get("subgraphs") if isinstance(found.get("subgraphs"), list) else []
    found = [s for s in found
             if isinstance(s, dict) and isinstance(s.get("id"), str) and isinstance(s.get("nodes"), list)]
    contents = {s["id"]: [n["type"] for n in s["nodes"] if isinstance(n, dict) and isinstance(n.get("type"), str)]
                for s in found}
    holding = {sid for sid, kinds in contents.items() if any(group_name(k) for k in kinds)}
    while True:  # a subgraph holding an instance of one that holds a group node holds it too
        more = {sid for sid, kinds in contents.items() if sid not in holding and holding.intersection(kinds)}
        if not more:
            break
        holding |= more
    for node in ui.get("nodes") if isinstance(ui.get("nodes"), list) else []:
        if isinstance(node, dict) and isinstance(node.get("type"), str) and node["type"] in holding \
                and is_id(node.get("id")) \
                and node.get("mode", 0) not in (MUTED, BYPASSED):
            raise WorkflowError(node["id"], None, "its subgraph contains a group node; group nodes inside subgraphs "
                                                  "do not run (nor in ComfyUI): convert that group node to nodes or "
                                                  "to a subgraph and save again")


def _from_inner_origin(link, outputs):
    """A top-level link starting at an expanded group node, starting at the inner node instead."""
    fields = raw_link_fields(link)
    if fields is None:
        return link
    _, origin, slot = fields
    if not is_id(origin) or str(origin) not in outputs:
        return link
    name, given = outputs[str(origin)]
    if not _is_index(slot, len(given)):
        raise WorkflowError(origin, None, f"group node {name!r}: a link leaves its output slot {slot!r:.20}, "
                                          f"but the group has {len(given)} outputs")
    inner_id, inner_slot = given[slot]
    if isinstance(link, list):
        return [link[0], inner_id, inner_slot, *link[3:]]
    return dict(link, origin_id=inner_id, origin_slot=inner_slot)


class _Layout:
    """The group node the frontend builds from a definition: its widgets (in order, each with the inner
    node and input it sets and how many extra values follow it in widgets_values), its inputs by name
    and its outputs."""

    def __init__(self, name, definition, registry, group_id):
        self.name, self.group_id = name, group_id
        if not isinstance(definition, dict) or not isinstance(definition.get("nodes"), list):
            raise self.error("its definition in extra.groupNodes has no list of nodes")
        self.nodes = definition["nodes"]
        for index, node in enumerate(self.nodes):
            if not isinstance(node, dict) or not isinstance(node.get("type"), str):
                raise self.error(f"inner node {index} has no type: {node!r:.60}")
            slots = node.get("inputs") if node.get("inputs") is not None else []
            if not isinstance(slots, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                                      for s in slots):
                raise self.error(f"inner node {index} ({node['type']}): its inputs must be a list of named slots")
        config = definition.get("config")
        self.config = config if isinstance(config, dict) else {}
        self.classes = [self._class(i, n, registry) for i, n in enumerate(self.nodes)]
        self._read_links(definition)
        self.widgets = []  # (group widget name, inner index, inner input name, extra values after it)
        self.inputs = {}  # group input name -> (inner index, inner input name)
        self.outputs = []  # (inner index, inner output slot) per group output
        seen, deferred = {}, []
        for index in range(len(self.nodes)):
            spec = self._spec(index)
            if spec is None:
                continue
            deferred.append(self._node_inputs(index, spec, seen))
            self._node_outputs(index, spec)
        for converted in deferred:  # the frontend adds widget inputs with sockets after all nodes
            converted()

    def error(self, problem):
        return WorkflowError(self.group_id, None, f"group node {self.name!r}: {problem}")

    def _class(self, index, node, registry):
        if node["type"] in VIRTUAL or node["type"] in ("PrimitiveNode", "Reroute"):
            return None
        if node["type"] not in registry:
            raise self.error(f"inner node {index} is a {node['type']!r}, which sld does not know, so the group's "
                             "inputs and widgets cannot be read")
        return registry[node["type"]]

    def _read_links(self, definition):
        links = definition.get("links") if definition.get("links") is not None else []
        if not isinstance(links, list):
            raise self.error(f"its links must be a list, got {links!r:.60}")
        self.links_to, self.links_from = {}, {}  # (target, slot) -> (origin, slot, type); (origin, slot) -> [...]
        for link in links:
            if not isinstance(link, list) or len(link) < 4:
                raise self.error(f"a malformed link: {link!r:.80}")
            origin, origin_slot, target, target_slot = link[:4]
            if origin is None:  # came from outside when the group was made
                continue
            for index in (origin, target):
                if not _is_index(index, len(self.nodes)):
                    raise self.error(f"a link names inner node {index!r:.20}, which is not in the group (it has "
                                     f"{len(self.nodes)} nodes): {link!r:.80}")
            slots = self.nodes[target].get("inputs") or []
            if not _is_index(target_slot, len(slots)):
                raise self.error(f"a link goes to input slot {target_slot!r:.20} of inner node {target} "
                                 f"({self.nodes[target]['type']}), which has {len(slots)} inputs")
            count = self._output_count(origin)
            if not _is_index(origin_slot, count):
                raise self.error(f"a link leaves output slot {origin_slot!r:.20} of inner node {origin} "
                                 f"({self.nodes[origin]['type']}), which has {count} outputs")
            kind = link[5] if len(link) > 5 else None
            self.links_to[(target, target_slot)] = (origin, origin_slot, kind)
            self.links_from.setdefault((origin, origin_slot), []).append((target, target_slot))
        external = definition.get("external") if definition.get("external") is not None else []
        if not isinstance(external, list) or not all(isinstance(e, list) and len(e) >= 2 for e in external):
            raise self.error(f"its external list must hold [node index, output slot, type] entries, "
                             f"got {external!r:.60}")
        self.external = {(e[0], e[1]): (e[2] if len(e) > 2 else None) for e in external}

    def _output_count(self, index):
        cls = self.classes[index]
        if cls is not None:
            return len(getattr(cls, "RETURN_TYPES", ()))
        return 0 if self.nodes[index]["type"] in VIRTUAL else 1

    # -- what each inner node adds to the group node ------------------------------------------------
    def _spec(self, index):
        """{input name: (kind, options, is widget)} of an inner node, in the frontend's order, with its
        output count; None for nodes the frontend leaves out of the group's slots."""
        node, cls = self.nodes[index], self.classes[index]
        if cls is not None:
            widgets = {name for name, _ in widget_inputs(cls)}
            declared = cls.INPUT_TYPES()
            spec = {}
            for section in ("required", "optional"):
                for name, entry in (declared.get(section) or {}).items():
                    options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                    spec[name] = (entry[0], options, name in widgets)
            return spec
        if node["type"] == "PrimitiveNode":
            targets = self.links_from.get((index, 0))
            if not targets:
                return None  # not connected: the frontend skips it
            kind = self.links_to[targets[0]][2]
            if kind == "COMBO" or kind is None:
                kind = self._target_kind(*targets[0])
            return {"value": (kind, {}, isinstance(kind, list) or kind in WIDGET_TYPES)}
        if node["type"] == "Reroute":
            used_inside = (index, 0) in self.links_to and (index, 0) in self.links_from
            if used_inside and (index, 0) not in self.external:
                return None
            kind = self._reroute_kind(index)
            return {kind: (kind, {"forceInput": True}, False)}
        return None

    def _target_kind(self, target, slot):
        name = self.nodes[target]["inputs"][slot]["name"]
        cls = self.classes[target]
        declared = cls.INPUT_TYPES() if cls is not None else {}
        for section in ("required", "optional"):
            if name in (declared.get(section) or {}):
                return declared[section][name][0]
        return None

    def _reroute_kind(self, index):
        for target, slot in self.links_from.get((index, 0), []):
            kind = self.nodes[target]["inputs"][slot].get("type")
            if isinstance(kind, str) and kind != "*":
                return kind
        if (index, 0) in self.links_to:
            origin, slot, kind = self.links_to[(index, 0)]
            outputs = self.nodes[origin].get("outputs")
            if isinstance(outputs, list) and _is_index(slot, len(outputs)) and isinstance(outputs[slot], dict):
                return outputs[slot].get("type") or kind or "*"
            return kind or "*"
        return self.external.get((index, 0)) or "*"

    def _node_inputs(self, index, spec, seen):
        """Adds the node's plain widgets and unconnected sockets; returns what adds its widgets that
        have a socket (every widget in frontends 1.16+), which the frontend does after all nodes."""
        node = self.nodes[index]
        slots = node.get("inputs") or []
        sockets, converted = [], {}
        for name, (kind, options, is_widget) in spec.items():
            if not is_widget:
                sockets.append(name)
                continue
            position = next((i for i, s in enumerate(slots) if s["name"] == name
                             and isinstance(s.get("widget"), dict) and s["widget"].get("name") == name), None)
            if position is not None:
                converted[position] = name
            else:
                self._add_widget(index, name, kind, options, seen)
        for position, name in enumerate(sockets):
            if (index, position) in self.links_to:
                continue
            group_input, custom = self._input_name(index, name, seen)
            if custom.get("visible") is False:
                continue
            self.inputs[group_input] = (index, name)

        def add_converted():
            # The frontend sorts the socket positions as strings and takes the i-th one's link state
            # from slot len(sockets) + i: so with ten or more inputs both follow its order, not ours.
            for i, position in enumerate(sorted(converted, key=str)):
                if (index, len(sockets) + i) in self.links_to:
                    continue
                name = converted[position]
                kind, options, _ = spec[name]
                group_input = self._add_widget(index, name, kind, options, seen)
                self.inputs[group_input] = (index, name)
        return add_converted

    def _add_widget(self, index, name, kind, options, seen):
        group_widget, _ = self._input_name(index, name, seen)
        control = (bool(options.get("control_after_generate")) or name in ("seed", "noise_seed")
                   or self.nodes[index]["type"] == "PrimitiveNode")
        is_combo = isinstance(kind, list) or kind == "COMBO"
        extra = (1 if kind == "INT" else 2 if is_combo else 0) if control else 0
        extra += 1 if is_combo and options.get("image_upload") else 0  # LoadImage's upload button
        self.widgets.append((group_widget, index, name, extra))
        return group_widget

    def _input_name(self, index, name, seen):
        """The frontend's name for an inner input on the group node: renamed in the config, else the
        slot's label, else its own name; prefixed with the node's title or type when taken (and for
        titled primitives). Returns (name, the input's config entry)."""
        node = self.nodes[index]
        entry = self.config.get(str(index)) if isinstance(self.config.get(str(index)), dict) else {}
        entry = entry.get("input") if isinstance(entry.get("input"), dict) else {}
        custom = entry.get(name) if isinstance(entry.get(name), dict) else {}
        label = next((s.get("label") for s in node.get("inputs") or [] if s["name"] == name), None)
        shown = custom["name"] if custom.get("name") is not None else label if label is not None else name
        key = shown
        if (node["type"] == "PrimitiveNode" and node.get("title")) or shown in seen:
            prefix = f"{node['title'] if node.get('title') is not None else node['type']} "
            key = shown = f"{prefix}{name}"
            if shown in seen:
                shown = f"{prefix}{seen[shown]} {name}"
        seen[key] = seen.get(key, 1) + 1
        return shown, custom

    def _node_outputs(self, index, spec):
        entry = self.config.get(str(index)) if isinstance(self.config.get(str(index)), dict) else {}
        entry = entry.get("output") if isinstance(entry.get("output"), dict) else {}
        for slot in range(self._output_count(index)):
            custom = entry.get(str(slot)) if isinstance(entry.get(str(slot)), dict) else {}
            used_inside = (index, slot) in self.links_from and (index, slot) not in self.external
            visible = custom["visible"] if custom.get("visible") is not None else not used_inside
            if visible:
                self.outputs.append((index, slot))

    # -- one instance --------------------------------------------------------------------------------
    def inner_nodes(self, group_id, instance):
        """The instance's inner nodes as flat UI nodes ("9:0", ...) with their links: the definition's
        own, and the instance's incoming links moved to the inner inputs they feed."""
        nodes, links = [], []
        for index, node in enumerate(self.nodes):
            slots = [dict(s, link=None) for s in node.get("inputs") or []]
            nodes.append(dict(node, id=f"{group_id}:{index}", inputs=slots))
        for number, ((target, slot), (origin, origin_slot, _)) in enumerate(sorted(self.links_to.items())):
            link_id = f"{group_id}#{number}"
            nodes[target]["inputs"][slot]["link"] = link_id
            links.append({"id": link_id, "origin_id": f"{group_id}:{origin}", "origin_slot": origin_slot})
        names = {**{w[0]: (w[1], w[2]) for w in self.widgets}, **self.inputs}
        slots = instance.get("inputs") if instance.get("inputs") is not None else []
        if not isinstance(slots, list):
            raise WorkflowError(group_id, None, f"its inputs must be a list of slots, got {slots!r:.60}")
        for slot in slots:
            if not isinstance(slot, dict) or slot.get("link") is None:
                continue
            if slot.get("name") not in names:
                raise WorkflowError(group_id, slot.get("name") if isinstance(slot.get("name"), str) else None,
                                    f"group node {self.name!r}: this input is connected, but the group has no input "
                                    f"of that name (its inputs: {', '.join(self.inputs) or 'none'})")
            index, name = names[slot["name"]]
            inner = nodes[index]["inputs"]
            target = next((s for s in inner if s["name"] == name), None)
            if target is None:
                target = {"name": name, "link": None}
                inner.append(target)
            target["link"] = slot["link"]
        return nodes, links

    def values(self, group_id, instance):
        """{inner flat id: {input: value}} from the instance's widgets_values; a primitive's value goes
        to the inputs it is linked to. Later widgets win, as in the frontend."""
        stored = instance.get("widgets_values")
        if stored is None:
            return {}  # nothing stored: the inner nodes' own values stand
        expected = sum(1 + extra for *_, extra in self.widgets)
        if not isinstance(stored, list) or len(stored) != expected:
            names = ", ".join(w[0] for w in self.widgets) or "none"
            got = f"{len(stored)} values" if isinstance(stored, list) else repr(stored)[:40]
            raise WorkflowError(group_id, None, f"group node {self.name!r}: its widgets_values has {got}, but the "
                                                f"group's widgets take {expected} ({names}, with the 'control after "
                                                "generate' values)")
        out, position = {}, 0
        for _, index, name, extra in self.widgets:
            value = stored[position]
            position += 1 + extra
            if self.nodes[index]["type"] == "PrimitiveNode":
                for target, slot in self.links_from.get((index, 0), []):
                    out.setdefault(f"{group_id}:{target}", {})[self.nodes[target]["inputs"][slot]["name"]] = value
            else:
                out.setdefault(f"{group_id}:{index}", {})[name] = value
        return out

    def position(self, index, name):
        """Where the value of inner input `name` of inner node `index` sits in widgets_values, or None."""
        position = 0
        found = None
        for _, widget_index, widget_name, extra in self.widgets:
            if (widget_index, widget_name) == (index, name):
                found = position
            position += 1 + extra
        return found


def located(error, ui):
    """A WorkflowError about a group node's inner node ("9:3"), said of the group node on the canvas
    (9) with the inner node's type and title; other errors as they are."""
    node_id = error.node_id
    if not isinstance(node_id, str) or ":" not in node_id or not isinstance(ui.get("nodes"), list):
        return error
    group_id, _, index = node_id.partition(":")
    group = next((n for n in ui["nodes"] if isinstance(n, dict) and str(n.get("id")) == group_id
                  and group_name(n.get("type")) is not None), None)
    if group is None or not (index.isascii() and index.isdigit()):
        return error
    try:
        nodes = _definition(ui, group)["nodes"]
    except (WorkflowError, TypeError, KeyError):
        nodes = None
    inner = nodes[int(index)] if isinstance(nodes, list) and int(index) < len(nodes) else {}
    inner = inner if isinstance(inner, dict) else {}
    what = str(inner.get("type", "?")) + (f" {inner['title']!r}" if inner.get("title") else "")
    where = f"group node {group_name(group['type'])!r}, inner node {node_id} ({what})"
    where += f", input {error.input_name!r}" if error.input_name else ""
    return WorkflowError(group_id, None, f"{where}: {error.message}")


# --- --set on group nodes -------------------------------------------------------------------------------

def set_input(workflow, node_id, input_name, value, registry):
    """`--set NODE_ID.INPUT=VALUE` where NODE_ID is a group node (INPUT: a widget by the name the group
    node shows) or a node inside one ("9:3"). The value is also written where the saved workflow keeps
    it (the group node's widgets_values, else the inner node's own values in the definition), so the
    result's workflow metadata reproduces it. Returns True when done here; False when the plain
    override of the prompt should follow."""
    group_id, inner, index = str(node_id).partition(":")
    nodes = workflow.ui.get("nodes") if isinstance(workflow.ui.get("nodes"), list) else []
    group = next((n for n in nodes if _is_active_group(n) and str(n["id"]) == group_id), None)
    if group is None or (inner and not (index.isascii() and index.isdigit())):
        return False
    try:
        layout = _Layout(group_name(group["type"]), _definition(workflow.ui, group), registry, group_id)
        layout.values(group_id, group)  # its stored values fit the layout
    except WorkflowError:  # e.g. a PNG whose prompt runs but whose UI graph is damaged
        return False
    stored = group.get("widgets_values")
    if inner:
        inputs = workflow.prompt.get(node_id, {}).get("inputs", {})
        if isinstance(inputs.get(input_name), list):  # a link (widget lists are wrapped): the plain override refuses
            return False
        position = layout.position(int(index), input_name)
        if position is not None and stored is not None:
            stored[position] = value
        elif int(index) < len(layout.nodes):
            _write_inner_value(layout.nodes[int(index)], input_name, value, registry)
        return False
    return _set_group_widget(workflow, layout, group, input_name, value)


def _set_group_widget(workflow, layout, group, input_name, value):
    group_id = str(group["id"])
    if group.get("widgets_values") is None:
        raise WorkflowError(group_id, input_name, f"--set: group node {group_id} stores no widget values; set the "
                                                  f"inner node instead, e.g. --set {group_id}:0.{input_name}=...")
    found = [w for w in layout.widgets if w[0] == input_name]
    if not found:
        names = ", ".join(w[0] for w in layout.widgets) or "none"
        raise WorkflowError(group_id, input_name, f"--set: group node {group_id} has no widget {input_name!r}; "
                                                  f"its widgets: {names}")
    _, index, name, _ = found[-1]
    if layout.nodes[index]["type"] == "PrimitiveNode":
        targets = [(f"{group_id}:{t}", layout.nodes[t]["inputs"][s]["name"]) for t, s in layout.links_from[(index, 0)]]
    else:
        targets = [(f"{group_id}:{index}", name)]
    # In the prompt a list is a link (widget lists are wrapped): a connected input keeps its link.
    targets = [(t, n) for t, n in targets
               if t in workflow.prompt and not isinstance(workflow.prompt[t]["inputs"].get(n), list)]
    if not targets:
        raise WorkflowError(group_id, input_name, "--set: this widget feeds nothing: the inner input it sets is "
                                                  "connected, or its node does not run")
    for target, target_input in targets:
        workflow.prompt[target]["inputs"][target_input] = {"__value__": value} if isinstance(value, list) else value
    group["widgets_values"][layout.position(index, name)] = value
    return True


def _write_inner_value(node, input_name, value, registry):
    """Into an inner node's own widgets_values in the definition (shared by every instance), for an
    input the group node has no widget for."""
    values, cls = node.get("widgets_values"), registry.get(node["type"])
    if isinstance(values, list) and cls is not None and input_name in widget_slots(cls, values):
        values[widget_slots(cls, values)[input_name]] = value
