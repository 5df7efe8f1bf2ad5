"""Typed errors of the headless runner. Raised where the fact is known; formatted only by the CLI."""
from ..sld_core.errors import SLDError


def shown(text):
    """`text` as it may be printed on a terminal: control and other unprintable characters (a node id
    or file name from a workflow can hold ESC, NUL, newlines, lone surrogates) as Python escapes."""
    if text is None:
        return None
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class WorkflowError(SLDError):
    """The workflow file (or a --set override) is unusable; `node_id`/`input_name` say where, if known."""

    def __init__(self, node_id, input_name, message):
        self.node_id = shown(node_id)
        self.input_name = shown(input_name)
        self.message = shown(message)
        where = "" if node_id is None else f"node {self.node_id}" + (f", input {self.input_name!r}" if input_name else "") + ": "
        super().__init__(where + self.message)


class ValidationError(SLDError):
    """The graph failed validation. `report` has ComfyUI's shape: {"error": {...}, "node_errors": {...}}."""

    def __init__(self, report):
        self.report = report
        super().__init__(report["error"]["message"])

    def problems(self):
        """(node_id, class_type, input_name, message) for every problem, in node order."""
        out = []
        for node_id, entry in self.report["node_errors"].items():
            for error in entry["errors"]:
                input_name = error.get("extra_info", {}).get("input_name")
                details = error.get("details")
                message = error["message"] + (f": {details}" if details and details != input_name else "")
                out.append((shown(node_id), shown(entry.get("class_type")), shown(input_name), shown(message)))
        if not out:
            error = self.report["error"]
            out.append((None, None, None, shown(error["message"] + (f": {error['details']}" if error.get("details") else ""))))
        return out


class NodeExecutionError(SLDError):
    """A node failed while running (exit code 1). `cause` is the original exception."""

    def __init__(self, node_id, class_type, input_name, message, cause=None):
        self.node_id, self.class_type, self.input_name, self.message = node_id, class_type, input_name, shown(message)
        self.cause = cause
        where = f"node {node_id} ({class_type})" + (f", input {input_name!r}" if input_name else "")
        super().__init__(f"{where}: {message}")


class Interrupted(SLDError):
    """The user stopped the run (Ctrl-C); raised between sampling steps or between nodes."""

    def __init__(self, node_id=None, step=None, total=None):
        self.node_id, self.step, self.total = node_id, step, total
        at = f" at step {step}/{total} of node {node_id}" if step is not None else (f" before node {node_id}" if node_id else "")
        super().__init__(f"interrupted{at}")
