"""`--set` and the frontend's primitive nodes (PrimitiveNode) in a UI workflow.

A primitive node holds one widget value ("value") and drives the widgets it is linked to: the frontend
copies its value into each of them before every queue, so the API graph holds that value on every
target. Setting one target alone would leave the primitive, and the workflow saved in the PNG, with the
old value, which ComfyUI would bring back when the image is dragged in. So `--set P.value=V` sets the
primitive and every widget it drives, and `--set N.x=V` on a widget a primitive drives is refused
naming the primitive (as an input a subgraph widget feeds is, in subgraphs.py).
"""
from .errors import WorkflowError
from .ui_links import link_fields
from .widgets import widget_slots

PRIMITIVE = "PrimitiveNode"


def set_input(workflow, node_id, input_name, value, registry):
    """Handle `--set NODE_ID.INPUT=VALUE` when NODE_ID is a primitive node of the UI graph (True: done);
    refuse it when INPUT is a widget a primitive drives; False otherwise (the plain override follows)."""
    nodes = {str(n.get("id")): n for n in workflow.ui.get("nodes") or [] if isinstance(n, dict)}
    node = nodes.get(node_id)
    if node is None:
        return False
    links = _links(workflow.ui.get("links"))
    if node.get("type") == PRIMITIVE:
        if input_name != "value":
            raise WorkflowError(node_id, input_name, f"--set: a primitive node has one widget, 'value': "
                                                     f"--set {node_id}.value=...")
        _set_primitive(workflow, nodes, node, _targets(nodes, links, node_id), value, registry)
        return True
    for slot in node.get("inputs") or []:
        source = links.get(slot.get("link")) if isinstance(slot, dict) and slot.get("name") == input_name else None
        if source is not None and nodes.get(source, {}).get("type") == PRIMITIVE:
            driven = ", ".join(f"{t}.{name}" for t, name in _targets(nodes, links, source))
            title = f" ({nodes[source]['title']!r})" if nodes[source].get("title") else ""
            raise WorkflowError(node_id, input_name, f"--set: this input takes its value from primitive node "
                                                     f"{source}{title}, which drives {driven}; set that one: "
                                                     f"--set {source}.value=...")
    return False


def _links(raw):
    """{link id: origin node id} (malformed entries left out)."""
    return {fields[0]: str(fields[1]) for fields in map(link_fields, raw or []) if fields is not None}


def _targets(nodes, links, primitive_id):
    """[(node id, input name)] of the widgets the primitive drives, in node order."""
    return [(str(n.get("id")), slot["name"]) for n in nodes.values() for slot in n.get("inputs") or []
            if isinstance(slot, dict) and slot.get("link") is not None and links.get(slot["link"]) == primitive_id
            and isinstance(slot.get("name"), str)]


def _set_primitive(workflow, nodes, primitive, targets, value, registry):
    values = primitive.get("widgets_values")
    if isinstance(values, list) and values:
        values[0] = value
    else:
        primitive["widgets_values"] = [value]
    for target_id, name in targets:
        if isinstance(workflow.prompt.get(target_id), dict):
            workflow.prompt[target_id].setdefault("inputs", {})[name] = value
        target = nodes[target_id]
        stored, cls = target.get("widgets_values"), registry.get(target.get("type"))
        if isinstance(stored, dict):
            stored[name] = value
        elif isinstance(stored, list) and cls is not None and name in widget_slots(cls, stored):
            stored[widget_slots(cls, stored)[name]] = value
