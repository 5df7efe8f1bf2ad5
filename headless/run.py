"""Running a validated workflow: nodes in dependency order, outputs cached, progress, interrupts.

`Executor` is one headless session (folders, device, cache). `run` validates the whole graph first,
then executes only what the output nodes need, reusing cached outputs of unchanged nodes. An executor
made with `keep_outputs=False` (`sld run`: one graph per process) caches nothing and lets go of each
node's outputs after their last use, so a base + refiner graph holds one checkpoint at a time. Progress is
a bar over the graph plus one per sampler (plain lines when stderr is not a terminal). Setting
`interrupt` (the CLI does on Ctrl-C) stops the run at the next sampling step or node boundary; files
are only ever written whole.
"""
import dataclasses
import inspect
import threading
from dataclasses import dataclass, field

from ..sld_core.progress import progress_bar

from ..nodes import HEADLESS_NODE_CLASS_MAPPINGS
from ..nodes.context import use_runtime
from ..nodes.errors import NodeInputError
from ..sld_core.errors import SLDError
from .cache import OutputCache
from .errors import Interrupted, NodeExecutionError
from .plan import execution_order, node_links
from .validate import validate_prompt
from .workflow import is_link


@dataclass
class RunResult:
    """What a run did: files written, nodes executed and reused, each output node's `ui` dict."""

    prompt: dict
    images: list = field(default_factory=list)
    executed: list = field(default_factory=list)
    cached: list = field(default_factory=list)
    ui: dict = field(default_factory=dict)


class Executor:
    """Runs workflows with one runtime; keeps node outputs and node instances between runs."""

    def __init__(self, runtime, registry=None, progress=True, keep_outputs=True):
        self.keep_outputs = keep_outputs
        self.registry = dict(HEADLESS_NODE_CLASS_MAPPINGS if registry is None else registry)
        self.runtime = dataclasses.replace(runtime, progress=self._on_step)
        self.cache = OutputCache()
        self.interrupt = threading.Event()
        self.show_progress = progress
        self._instances = {}
        self._current = None  # node id being executed
        self._step_bar = None
        self._events = None

    def validate(self, prompt):
        """(prompt with converted values, output ids); raises `ValidationError`."""
        with use_runtime(self.runtime):
            return validate_prompt(prompt, self.registry)

    def run(self, prompt, ui=None, events=None):
        """Validate and run an API-format prompt; `ui` is the UI workflow to embed in saved PNGs.

        `events(kind, data)`, if given, observes the run (`sld serve` turns these into ComfyUI's
        WebSocket messages): "cached" {"nodes"} once before the first node, "executing" {"node"} before
        each node that runs, "progress" {"node", "value", "max"} after each sampling step, "executed"
        {"node", "output"} for a node with a `ui` output. It runs on this thread and should be quick."""
        self.interrupt.clear()
        self._events = events
        import torch  # here, not at the top: validating and listing nodes need no torch

        with use_runtime(self.runtime), torch.inference_mode():
            prompt, outputs = validate_prompt(prompt, self.registry)
            order = execution_order(prompt, outputs)
            signatures = self.cache.signatures(prompt, order, self.registry)
            if not self.keep_outputs:
                signatures = dict.fromkeys(signatures)  # None: never cached
                freed_after = release_schedule(prompt, order)
            result = RunResult(prompt=prompt)
            values = {}
            extra_pnginfo = {"workflow": ui} if ui is not None else None
            bar = progress_bar(total=len(order), desc="graph", unit="node", disable=not self.show_progress, leave=False)
            self._emit("cached", nodes=[n for n in order if self.cache.get(signatures[n]) is not None])
            try:
                for position, node_id in enumerate(order):
                    self._check_interrupt(node_id)
                    cached = self.cache.get(signatures[node_id])
                    if cached is not None:
                        values[node_id] = cached
                        result.cached.append(node_id)
                    else:
                        self._emit("executing", node=node_id)
                        values[node_id], ui_out = self._execute(node_id, prompt, values, extra_pnginfo)
                        self.cache.put(signatures[node_id], values[node_id])
                        result.executed.append(node_id)
                        if ui_out:
                            self._emit("executed", node=node_id, output=ui_out)
                            result.ui[node_id] = ui_out
                            result.images += ui_out.get("images", [])
                    if not self.keep_outputs:
                        done = freed_after.get(position, [])
                        release(values, done, {n: self.registry[prompt[n]["class_type"]].RETURN_TYPES for n in done})
                    bar.update(1)
            finally:
                bar.close()
                self._close_step_bar()
                self._events = None
            self.cache.retain(signatures.values())
            return result

    def _execute(self, node_id, prompt, values, extra_pnginfo):
        import torch  # already loaded by run()

        node = prompt[node_id]
        class_type = node["class_type"]
        cls = self.registry[class_type]
        spec = cls.INPUT_TYPES()
        # Only declared inputs reach the node (an undeclared one, which validation ignores as ComfyUI
        # does, would be an unexpected keyword); a function taking **kwargs gets them all.
        declared = {name for section in ("required", "optional") for name in (spec.get(section) or {})}
        takes_any = inspect.getfullargspec(getattr(cls, cls.FUNCTION)).varkw is not None
        kwargs = {name: values[v[0]][v[1]] if is_link(v) else v for name, v in node["inputs"].items()
                  if name in declared or takes_any}
        hidden = {"PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": node_id}
        for name, kind in (spec.get("hidden") or {}).items():
            kwargs[name] = hidden.get(kind)
        if (node_id, class_type) not in self._instances:
            self._instances[(node_id, class_type)] = cls()
        instance = self._instances[(node_id, class_type)]
        self._current = node_id
        try:
            out = getattr(instance, cls.FUNCTION)(**kwargs)
        except (Interrupted, KeyboardInterrupt):
            raise
        except NodeInputError as error:
            raise NodeExecutionError(node_id, class_type, error.input_name, error.message, error) from error
        except SLDError as error:
            raise NodeExecutionError(node_id, class_type, _input_named(str(error), node), str(error), error) from error
        except torch.OutOfMemoryError as error:
            raise NodeExecutionError(node_id, class_type, None, f"out of memory: {error}".splitlines()[0], error) from error
        except Exception as error:
            raise NodeExecutionError(node_id, class_type, None, f"{type(error).__name__}: {error}", error) from error
        finally:
            self._current = None
            self._close_step_bar()
        ui_out = None
        if isinstance(out, dict):
            ui_out, out = out.get("ui"), out.get("result", ())
        out = tuple(out)
        if len(out) != len(cls.RETURN_TYPES):
            raise NodeExecutionError(node_id, class_type, None,
                                     f"returned {len(out)} values for {len(cls.RETURN_TYPES)} outputs (a bug in the node)")
        return out, ui_out

    def _check_interrupt(self, node_id=None, step=None, total=None):
        if self.interrupt.is_set():
            raise Interrupted(node_id, step, total)

    def _on_step(self, value, total):
        """Progress hook nodes call after each sampling step: update the bar, honour an interrupt."""
        if self._step_bar is None:
            node = self._current or "?"
            self._step_bar = progress_bar(total=total, desc=f"sampling (node {node})", unit="step",
                                  disable=not self.show_progress, leave=False)
        self._step_bar.update(value - self._step_bar.n)
        self._emit("progress", node=self._current, value=value, max=total)
        if value < total:  # the last step's result is kept: stopping there would only waste it
            self._check_interrupt(self._current, value, total)

    def _emit(self, kind, **data):
        if self._events is not None:
            self._events(kind, data)

    def _close_step_bar(self):
        if self._step_bar is not None:
            self._step_bar.close()
            self._step_bar = None


MODEL_TYPES = {"MODEL", "CLIP", "VAE"}


def release_schedule(prompt, order):
    """{position in `order`: the nodes whose outputs nothing after that position reads}."""
    last_use = {}
    for position, node_id in enumerate(order):
        for _, source, _ in node_links(prompt[node_id]):
            last_use[source] = position
    schedule = {}
    for node_id, position in last_use.items():
        schedule.setdefault(position, []).append(node_id)
    return schedule


def release(values, node_ids, return_types):
    """Drop these nodes' outputs (`return_types`: {node id: the node's RETURN_TYPES}); when that let go
    of a model, collect garbage now, so that the next checkpoint finds the memory free (modules can
    hold reference cycles)."""
    for node_id in node_ids:
        values.pop(node_id, None)
    if any(MODEL_TYPES & set(return_types[node_id]) for node_id in node_ids):
        import gc

        gc.collect()


def _input_named(message, node):
    """The input an sld_core message starts with ("latent_image: ..."), when it is one of the node's."""
    head = message.split(":", 1)[0].strip()
    return head if head in node["inputs"] else None
