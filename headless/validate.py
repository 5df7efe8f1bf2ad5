"""Whole-graph validation before anything runs, reported in ComfyUI's `node_errors` shape.

Mirrors ComfyUI's `validate_prompt`/`validate_inputs` (error types, messages, and the rule that
inputs named by a node's `VALIDATE_INPUTS` skip the built-in range and list checks) and collects every
problem instead of stopping at the first. Headless mode is stricter than ComfyUI where ComfyUI
relies on its UI or fails late: INT widgets must respect their `step` (EmptyLatentImage's width and
height are multiples of 8), fractional values are not silently truncated to INT, constants are not
accepted for link-only inputs, and a latent too large for this machine is refused up front.
"""
import copy
import difflib
import inspect
import math
import os

from ..nodes.latent import estimated_peak_bytes
from ..nodes.sampling import empty_step_range
from .errors import ValidationError
from .plan import ancestors, find_cycle, id_order
from .workflow import is_link, shown

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")


def validate_prompt(prompt, registry):
    """Check an API-format prompt; returns (prompt with converted values, output node ids).

    Raises `ValidationError` with every problem found. Needs the headless runtime active (combo
    lists such as checkpoint names depend on its folders).
    """
    prompt = copy.deepcopy(prompt)
    errors = {}

    def report(node_id, class_type, type_, message, details="", input_name=None, **extra):
        entry = errors.setdefault(node_id, {"errors": [], "dependent_outputs": [], "class_type": class_type})
        info = {"input_name": input_name, **extra} if input_name else dict(extra)
        entry["errors"].append({"type": type_, "message": message, "details": details, "extra_info": info})

    known = _check_structure(prompt, registry, report)
    outputs = sorted((n for n in known if getattr(registry[prompt[n]["class_type"]], "OUTPUT_NODE", False) is True),
                     key=id_order)
    if not outputs and not errors:
        raise ValidationError({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs",
                                         "details": "add a SaveImage or PreviewImage node", "extra_info": {}},
                               "node_errors": {}})
    needed = ancestors(prompt, outputs) & known
    cycle = find_cycle(prompt, needed)
    for node_id, input_name in cycle:
        report(node_id, prompt[node_id]["class_type"], "dependency_cycle", "Dependency cycle",
               f"{input_name}: node {node_id} depends on itself through " +
               " -> ".join(n for n, _ in cycle + cycle[:1]), input_name=input_name)
    for node_id in sorted(needed, key=id_order):
        if node_id not in errors:
            _check_node(prompt, node_id, registry, known, report)
    if errors:
        for output in outputs:
            for node_id in ancestors(prompt, [output]) & errors.keys():
                errors[node_id]["dependent_outputs"].append(output)
        details = "\n".join(f"{e['message']}: {e['details']}" for entry in errors.values() for e in entry["errors"])
        raise ValidationError({"error": {"type": "prompt_outputs_failed_validation",
                                         "message": "Prompt outputs failed validation",
                                         "details": details, "extra_info": {}},
                               "node_errors": dict(sorted(errors.items(), key=lambda kv: id_order(kv[0])))})
    return prompt, outputs


def _check_structure(prompt, registry, report):
    """Every node needs a known class_type and an inputs object; returns the ids that have them."""
    known = set()
    for node_id, node in prompt.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if not isinstance(class_type, str):
            report(node_id, None, "invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                   f"Node ID '#{node_id}'")
        elif class_type not in registry:
            near = closest_node_names(class_type, registry)
            hint = f" ({did_you_mean(near)})" if near else "; `sld nodes` lists the known nodes"
            name = class_type if class_type.isprintable() and len(class_type) <= 80 else shown(class_type)
            report(node_id, name, "invalid_prompt", f"Cannot execute because node {name} does not exist.",
                   f"Node ID '#{node_id}'{hint}", suggestions=near)
        elif not isinstance(node.get("inputs", {}), dict):
            report(node_id, class_type, "invalid_prompt", "Node inputs must be an object {name: value}",
                   f"Node ID '#{node_id}'")
        else:
            node.setdefault("inputs", {})
            known.add(node_id)
    return known


def closest_node_names(name, registry, count=3):
    """Up to `count` known node names closest to `name` (difflib's ratio, case ignored; a name equal
    but for case first), for an unknown class_type."""
    by_lower = {known.lower(): known for known in sorted(registry)}
    key = name.strip().lower()
    near = difflib.get_close_matches(key, list(by_lower), n=count, cutoff=0.6)
    return [by_lower[k] for k in ([key] if key in by_lower else []) + [k for k in near if k != key]][:count]


def did_you_mean(names):
    """'did you mean A, B or C?' for a non-empty list of names."""
    return f"did you mean {' or '.join([', '.join(names[:-1]), names[-1]] if len(names) > 1 else names)}?"


def _check_node(prompt, node_id, registry, known, report):
    node = prompt[node_id]
    class_type = node["class_type"]
    cls = registry[class_type]
    try:
        spec = cls.INPUT_TYPES()
    except Exception as error:  # a node whose input list cannot be built (e.g. unreadable folder)
        report(node_id, class_type, "exception_during_validation", "Exception when validating node", str(error))
        return
    custom_inputs, custom_all = _custom_validated_inputs(cls)
    inputs = node["inputs"]
    failed = set()
    for section in ("required", "optional"):
        for name, entry in (spec.get(section) or {}).items():
            kind, options = entry[0], (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
            if name not in inputs:
                if section == "required":
                    report(node_id, class_type, "required_input_missing", "Required input is missing", name, name)
                    failed.add(name)
                continue
            problem = _check_value(prompt, inputs, name, kind, options, known, registry,
                                   skip_builtin=custom_all or name in custom_inputs)
            if problem:
                report(node_id, class_type, *problem, input_name=name, received_value=shown(inputs[name]))
                failed.add(name)
    extra = EXTRA_CHECKS.get(class_type)
    if extra and not failed:
        problem = extra(inputs)
        if problem:
            # details = the input's name, as ComfyUI's own range errors (the message is said once)
            report(node_id, class_type, "value_too_large", problem[1], problem[0], input_name=problem[0])
    if (custom_inputs or custom_all) and not failed:
        _run_custom_validation(cls, node_id, class_type, inputs, custom_inputs, custom_all, report)


def _custom_validated_inputs(cls):
    function = getattr(cls, "VALIDATE_INPUTS", None)
    if function is None:
        return set(), False
    argspec = inspect.getfullargspec(function)
    return set(argspec.args) - {"cls", "s", "self"}, argspec.varkw is not None


def _run_custom_validation(cls, node_id, class_type, inputs, names, all_inputs, report):
    values = {k: (None if is_link(v) else v) for k, v in inputs.items() if all_inputs or k in names}
    try:
        result = cls.VALIDATE_INPUTS(**values)
    except Exception as error:
        result = f"{type(error).__name__}: {error}"
    if result is not True:
        result = str(result)
        if len(result) > 300:  # a node's message may quote a whole value (e.g. a 5000-character file name)
            result = result[:297] + "..."
        for name in sorted(values):
            details = name + ("" if result == "False" else f" - {result}")
            report(node_id, class_type, "custom_validation_failed", "Custom validation failed for node", details, name)


def _check_value(prompt, inputs, name, kind, options, known, registry, skip_builtin):
    """(error type, message, details) for a bad input value, or None; converts good constants in place."""
    value = inputs[name]
    if isinstance(value, list) or isinstance(value, tuple):
        return _check_link(prompt, name, value, kind, known, registry)
    if isinstance(value, dict) and "__value__" in value:
        value = inputs[name] = value["__value__"]
    is_widget = isinstance(kind, list) or kind in WIDGET_TYPES
    if not is_widget:
        return ("invalid_input_type", f"{name} must be linked to a {kind} output",
                f"{name}: expected a link [node_id, output_index] to a {kind} output, got the constant {shown(value)}")
    if isinstance(kind, list):
        if skip_builtin or (isinstance(value, (str, int, float)) and not isinstance(value, bool) and value in kind):
            return None
        listed = f"(list of length {len(kind)})" if len(kind) > 20 else str(kind)
        return ("value_not_in_list", "Value not in list", f"{name}: {shown(value)} not in {listed}")
    converted, problem = _convert(kind, value)
    if problem:
        return ("invalid_input_type", f"Failed to convert an input value to a {kind} value", f"{name}, {problem}")
    inputs[name] = converted
    if skip_builtin:
        return None
    if "min" in options and converted < options["min"]:
        return ("value_smaller_than_min", f"Value {shown(converted)} smaller than min of {options['min']}", name)
    if "max" in options and converted > options["max"]:
        return ("value_bigger_than_max", f"Value {shown(converted)} bigger than max of {options['max']}", name)
    if kind == "INT" and options.get("step", 1) > 1 and converted % options["step"]:
        return ("value_not_multiple_of_step", f"Value {shown(converted)} is not a multiple of {options['step']}", name)
    return None


def _convert(kind, value):
    """(converted value, None) or (None, why not) for a constant of widget type `kind`."""
    if kind == "STRING":
        if isinstance(value, str):
            if not _is_unicode(value):  # JSON can escape a lone surrogate; tokenizers and file names cannot take it
                return None, f"text with a lone surrogate (not Unicode text): {shown(value)}"
            return value, None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
        return None, f"expected text, got {type(value).__name__} {shown(value)}"
    if kind == "BOOLEAN":
        return (value, None) if isinstance(value, bool) else (None, f"expected true or false, got {shown(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None, f"expected a number, got {type(value).__name__} {shown(value)}"
    if isinstance(value, int) and kind == "INT":
        return value, None  # exact: an integer of hundreds of digits has no float
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None, f"expected a number, got {shown(value)}"
    if not math.isfinite(number):
        return None, f"expected a finite number, got {shown(value)}"
    if kind == "FLOAT":
        return number, None
    if not number.is_integer():
        return None, f"expected a whole number, got {shown(value)}"
    return int(number), None


def _check_link(prompt, name, value, kind, known, registry):
    if not is_link(value):
        return ("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                f"{name}: {shown(value)}")
    source, index = str(value[0]), value[1]
    if source not in prompt:
        return ("bad_linked_input", f"Linked node {shown(source)} does not exist",
                f"{name}: links to node {shown(source)}, which is not in the workflow")
    if source not in known:
        return None  # the source node's own error says why
    source_class = prompt[source]["class_type"]
    returns = registry[source_class].RETURN_TYPES
    if not 0 <= index < len(returns):
        return ("bad_linked_input", f"Linked output {shown(index)} does not exist",
                f"{name}: links to output {shown(index)} of node {source} ({source_class}), which has "
                f"{len(returns)} output(s)")
    received = returns[index]
    if not types_match(received, kind):
        expected = "COMBO" if isinstance(kind, list) else kind
        return ("return_type_mismatch", "Return type mismatch between linked nodes",
                f"{name}, received_type({received}) mismatch input_type({expected}) from node {source} ({source_class})")
    return None


def types_match(received, expected):
    """ComfyUI's rule: "*" matches anything; otherwise the comma-separated type sets must intersect."""
    if isinstance(expected, list):
        return received in ("COMBO", "*")
    if received == "*" or expected == "*":
        return True
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})


def _is_unicode(text):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True





def memory_budget_bytes():
    """Physical memory of this machine (the most a run could ever allocate on the CPU)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def check_latent_allocation(inputs):
    """Refuse an EmptyLatentImage whose generation cannot fit in memory, before anything runs."""
    width, height, batch = inputs["width"], inputs["height"], inputs["batch_size"]
    if is_link(width) or is_link(height) or is_link(batch):
        return None
    need, have = estimated_peak_bytes(width, height, batch), memory_budget_bytes()
    if need <= have:
        return None
    return ("batch_size" if batch > 1 else "width",
            f"{width}x{height} x batch_size {batch} needs at least {need / 2**30:.0f} GiB of working memory "
            f"to generate; this machine has {have / 2**30:.0f} GiB. Use a smaller size or batch")


# Checks ComfyUI leaves to run time, made here before anything runs.
EXTRA_CHECKS = {"EmptyLatentImage": check_latent_allocation,
                "SLDKSamplerAdvanced": lambda inputs: empty_step_range(inputs["steps"], inputs["start_at_step"],
                                                                       inputs["end_at_step"])}
