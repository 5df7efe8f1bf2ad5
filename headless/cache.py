"""Node outputs kept between runs in one process, keyed by input signature (ComfyUI's classic cache).

A node's signature is its class, its `IS_CHANGED` value, its constant inputs, and for each linked
input the signature of the node it links to, so a node is reused exactly when nothing it depends on
changed: a new seed re-runs the sampler and what follows it, never the checkpoint loader or the text
encoders. After each run, entries that run did not use are dropped (memory stays bounded by one
graph). Not cached, on purpose: output nodes (every `sld run` writes its files, where ComfyUI would
skip an identical re-queue), nodes marked `NOT_IDEMPOTENT` are keyed by id too, and an `IS_CHANGED`
that returns NaN means "always re-run".
"""
import inspect
import math

from .plan import node_links
from .workflow import is_link


def freeze(value):
    """A hashable, order-independent form of a JSON-like value."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(freeze(v) for v in value))
    if isinstance(value, float) and value.is_integer():
        return ("num", value)  # 8 and 8.0 are the same input
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ("num", value)
    return (type(value).__name__, value)


class OutputCache:
    """Signature → node outputs, for one executor."""

    def __init__(self):
        self._entries = {}

    def __len__(self):
        return len(self._entries)

    def signatures(self, prompt, order, registry):
        """{node id: signature or None (never cached)} for nodes in dependency order."""
        signatures = {}
        for node_id in order:
            node = prompt[node_id]
            cls = registry[node["class_type"]]
            signatures[node_id] = self._signature(node_id, node, cls, signatures)
        return signatures

    @staticmethod
    def _signature(node_id, node, cls, signatures):
        if getattr(cls, "OUTPUT_NODE", False):
            return None
        constants = {k: v for k, v in node["inputs"].items() if not is_link(v)}
        changed = None
        if hasattr(cls, "IS_CHANGED"):
            changed = cls.IS_CHANGED(**{k: v for k, v in constants.items() if k in _parameters(cls.IS_CHANGED)})
            if isinstance(changed, float) and math.isnan(changed):
                return None
        links = []
        for name, source, index in node_links(node):
            if signatures.get(source) is None:
                return None  # depends on something that is never cached
            links.append((name, signatures[source], index))
        key = (node["class_type"], freeze(changed), freeze(constants), tuple(sorted(links)))
        return key + (node_id,) if getattr(cls, "NOT_IDEMPOTENT", False) else key

    def get(self, signature):
        return None if signature is None else self._entries.get(signature)

    def put(self, signature, outputs):
        if signature is not None:
            self._entries[signature] = outputs

    def retain(self, signatures):
        """Drop every entry whose signature is not in `signatures` (the ones the last run used)."""
        keep = {s for s in signatures if s is not None}
        self._entries = {k: v for k, v in self._entries.items() if k in keep}


def _parameters(function):
    return set(inspect.signature(function).parameters)
