"""The prompt queue of `sld serve` and the one worker thread that runs it through the headless executor.

Queue items are ComfyUI's `[number, prompt_id, prompt, extra_data, outputs_to_execute]`, taken lowest
number first ("front" prompts get negative numbers). The worker runs one prompt at a time with one
`Executor`, whose cache persists between prompts (a new seed re-runs the sampler onward only), and
turns its events into ComfyUI's WebSocket messages, in ComfyUI's order:

    execution_start, execution_cached, (executing, progress..., executed)..., execution_success |
    execution_error | execution_interrupted, status, executing {node: null}

The queue is bounded (`full()`); every change is recorded in the durable history first.
"""
import heapq
import itertools
import logging
import threading
import time

from ..errors import Interrupted, NodeExecutionError, ValidationError
from ...sld_core.errors import SLDError

log = logging.getLogger(__name__)


class PromptQueue:
    def __init__(self, history, hub, max_pending):
        self.history, self.hub, self.max_pending = history, hub, max_pending
        self._cond = threading.Condition()
        self._heap = []
        self._order = itertools.count()  # ties in number run in arrival order
        self.running = None
        self.stopping = False

    def remaining(self):
        with self._cond:
            return len(self._heap) + (self.running is not None)

    def status(self):
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def _changed(self):
        self.hub.send("status", {"status": self.status()})

    def full(self):
        with self._cond:
            return len(self._heap) >= self.max_pending

    def put(self, item):
        """Queue `item`; False when the queue is full."""
        with self._cond:
            if len(self._heap) >= self.max_pending:
                return False
            self.history.queued(item)
            heapq.heappush(self._heap, (item[0], next(self._order), item))
            self._cond.notify()
        self._changed()
        return True

    def take(self):
        """The next item, waiting for one (marked running); None once `stop` was called."""
        with self._cond:
            while not self._heap and not self.stopping:
                self._cond.wait()
            if self.stopping:
                return None
            item = heapq.heappop(self._heap)[2]
            self.running = item
            self.history.started(item[1])
        self._changed()
        return item

    def done(self):
        with self._cond:
            self.running = None
        self._changed()

    def snapshot(self):
        """(running items, pending items in the order they will run), as GET /queue lists them."""
        with self._cond:
            return ([self.running] if self.running else []), [entry[2] for entry in sorted(self._heap)]

    def remove(self, prompt_ids=None):
        """Take pending prompts off the queue (all when `prompt_ids` is None); the running one stays."""
        with self._cond:
            keep = [e for e in self._heap if prompt_ids is not None and e[2][1] not in prompt_ids]
            removed = [e[2][1] for e in self._heap if e not in keep]
            self._heap = keep
            heapq.heapify(self._heap)
            self.history.dropped(removed)
        if removed:
            self._changed()
        return removed

    def stop(self):
        with self._cond:
            self.stopping = True
            self._cond.notify_all()


def public_output(ui):
    """A node's `ui` dict as clients see it: image entries without the server-side `path`."""
    out = dict(ui)
    if isinstance(out.get("images"), list):
        out["images"] = [{k: v for k, v in image.items() if k != "path"} for image in out["images"]]
    return out


class Worker(threading.Thread):
    """Runs queued prompts one at a time, forever (until the queue stops)."""

    def __init__(self, executor, queue, history, hub, policy):
        super().__init__(name="sld-serve-worker", daemon=True)
        self.executor, self.queue, self.history, self.hub, self.policy = executor, queue, history, hub, policy
        self.free_requested = False
        self.average_seconds = None  # of recent prompts: the Retry-After of a full queue
        self._interrupt_for = None  # prompt id an interrupt was asked for before its run began

    def interrupt(self, prompt_id=None):
        """POST /interrupt: stop the running prompt (only if it is `prompt_id`, when given)."""
        running = self.queue.running
        if running is None or (prompt_id is not None and running[1] != prompt_id):
            return False
        self._interrupt_for = running[1]
        self.executor.interrupt.set()
        return True

    def run(self):
        while True:
            item = self.queue.take()
            if item is None:
                return
            try:
                self.run_one(item)
            except Exception:  # the worker must outlive any prompt; this is a bug, so log it whole
                log.exception("sld serve: the worker failed on prompt %s", item[1])
                self.queue.done()
            if self.free_requested:
                self.free_requested = False
                self.executor.cache.retain(())

    def run_one(self, item):
        _number, prompt_id, prompt, extra_data, _outputs = item
        client = extra_data.get("client_id")
        messages, outputs, finished, last = [], {}, [], [None]
        started = time.perf_counter()

        def message(event, data, broadcast=False):
            data = {**data, "timestamp": int(time.time() * 1000)}
            messages.append([event, data])
            if client is not None or broadcast:
                self.hub.send(event, data, client)

        def on_event(kind, data):
            if kind == "cached":
                if self._interrupt_for == prompt_id:  # asked for before run() cleared the flag
                    self.executor.interrupt.set()
                finished.extend(data["nodes"])
                message("execution_cached", {"nodes": data["nodes"], "prompt_id": prompt_id})
            elif kind == "executing":
                if last[0] is not None:
                    finished.append(last[0])
                last[0] = data["node"]
                self.hub.current = (client, data["node"])
                self._send("executing", {"node": data["node"], "display_node": data["node"], "prompt_id": prompt_id}, client)
            elif kind == "progress":
                self._send("progress", {"value": data["value"], "max": data["max"], "prompt_id": prompt_id,
                                        "node": data["node"]}, client)
            elif kind == "executed":
                outputs[data["node"]] = public_output(data["output"])
                self._send("executed", {"node": data["node"], "display_node": data["node"],
                                        "output": outputs[data["node"]], "prompt_id": prompt_id}, client)

        message("execution_start", {"prompt_id": prompt_id})
        ok = False
        ui = (extra_data.get("extra_pnginfo") or {}).get("workflow")
        try:
            self.executor.run(prompt, ui if isinstance(ui, dict) else None, events=on_event)
            ok = True
            message("execution_success", {"prompt_id": prompt_id})
        except Interrupted as error:
            node = error.node_id or self.hub.current[1]
            message("execution_interrupted", {"prompt_id": prompt_id, "node_id": node,
                                              "node_type": _class_of(prompt, node), "executed": finished}, broadcast=True)
        except NodeExecutionError as error:
            text = f"input {error.input_name}: {error.message}" if error.input_name else error.message
            message("execution_error", _error_message(prompt_id, error.node_id, error.class_type, text,
                                                      type(error.cause).__name__ if error.cause else "NodeExecutionError",
                                                      finished))
        except ValidationError as error:  # something changed since it was queued (e.g. an input file went)
            node, class_type, input_name, text = error.problems()[0]
            text = f"input {input_name}: {text}" if input_name else text
            message("execution_error", _error_message(prompt_id, node, class_type, text, "ValidationError", finished))
        except SLDError as error:
            message("execution_error", _error_message(prompt_id, self.hub.current[1], _class_of(prompt, self.hub.current[1]),
                                                      str(error), type(error).__name__, finished))
        except Exception as error:  # a bug, not a user mistake: log the traceback on the server only
            log.exception("sld serve: prompt %s failed", prompt_id)
            message("execution_error", _error_message(prompt_id, self.hub.current[1], _class_of(prompt, self.hub.current[1]),
                                                      f"{type(error).__name__}: {error}", type(error).__name__, finished))
        finally:
            self._interrupt_for = None
        files = [image for ui_out in outputs.values() for image in ui_out.get("images", [])
                 if image.get("type") in ("output", "temp")]
        entry = {"outputs": outputs,
                 "meta": {n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n} for n in outputs},
                 "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages}}
        self.history.finished(prompt_id, entry, files, checked=self.policy.require_checker is not None)
        self.hub.current = (None, None)
        self.queue.done()
        if client is not None:
            self.hub.send("executing", {"node": None, "prompt_id": prompt_id}, client)
        seconds = time.perf_counter() - started
        self.average_seconds = seconds if self.average_seconds is None else 0.8 * self.average_seconds + 0.2 * seconds
        log.info("prompt %s %s in %.2f s", prompt_id, "done" if ok else "failed", seconds)

    def _send(self, event, data, client):
        if client is not None:
            self.hub.send(event, data, client)


def _class_of(prompt, node_id):
    node = prompt.get(node_id) if node_id is not None else None
    return node.get("class_type") if isinstance(node, dict) else None


def _error_message(prompt_id, node_id, class_type, text, exception_type, executed):
    """ComfyUI's execution_error data; no traceback: the message names the node and input instead."""
    return {"prompt_id": prompt_id, "node_id": node_id, "node_type": class_type, "executed": list(executed),
            "exception_message": text, "exception_type": exception_type, "traceback": [],
            "current_inputs": {}, "current_outputs": []}
