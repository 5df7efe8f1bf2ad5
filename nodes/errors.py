"""The one error type nodes add to sld_core's: a run-time problem traced to a named input."""
from ..sld_core.errors import SLDError


class NodeInputError(SLDError, ValueError):
    """`input_name` of the running node cannot be used (e.g. a checkpoint that fails to load)."""

    def __init__(self, input_name, message):
        self.input_name = input_name
        self.message = message
        super().__init__(f"{input_name}: {message}")
