"""Which inputs of a node class are widgets in ComfyUI's editor, and where their values sit in a UI
node's `widgets_values` (shared by the UI→API conversion and the subgraph expansion)."""

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def widget_inputs(cls):
    """Names of the inputs of a node class that are widgets in the UI, in input_order, with options."""
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):
                out.append((name, options))
    return out


def widget_slots(cls, values):
    """{widget name: index into widgets_values} for a node of `cls` with these stored values."""
    slots, index = {}, 0
    for name, options in widget_inputs(cls):
        if index >= len(values):
            break
        slots[name] = index
        index += 1
        if options.get("control_after_generate") and index < len(values) and _is_control(values[index]):
            index += 1
    return slots


def _is_control(value):
    return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)
