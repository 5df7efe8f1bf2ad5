"""Reading a request's JSON body within the server's limits, and `Refusal`, the 4xx a handler raises
(turned into ComfyUI's error shape by the app)."""
import json

from ..errors import WorkflowError
from ..workflow import MAX_DEPTH, check_depth


class Refusal(Exception):
    def __init__(self, status, type_, message, details="", node_errors=None, headers=None, extra=None):
        super().__init__(message)
        self.status, self.type, self.message, self.details = status, type_, message, details
        self.node_errors, self.headers, self.extra = node_errors or {}, headers, extra or {}


async def read_json(request, state, required=True):
    body = await request.read()
    if len(body) > state.max_body:
        raise Refusal(413, "body_too_large", "Request body too large",
                      f"{len(body)} bytes; at most {state.max_body} bytes (--max-body-mb)")
    if not body.strip():
        if required:
            raise Refusal(400, "invalid_json", "Empty request body", "expected a JSON object")
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise Refusal(400, "invalid_json", "Request body is not UTF-8 text", "expected a JSON object") from None
    except json.JSONDecodeError as error:
        raise Refusal(400, "invalid_json", "Request body is not valid JSON",
                      f"{error.msg} at line {error.lineno}, column {error.colno}") from None
    except RecursionError:
        raise Refusal(400, "too_deep", "Request body nested too deeply", f"at most {MAX_DEPTH} levels") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        raise Refusal(400, "invalid_json", "Request body is not valid JSON", str(error)) from None
    try:
        check_depth(data)
    except WorkflowError as error:
        raise Refusal(400, "too_deep", "Request body nested too deeply", str(error)) from None
    return data
