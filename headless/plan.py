"""Which nodes run, and in what order: the output nodes' ancestors, dependencies first.

Like ComfyUI, only nodes an output node depends on run (a dangling node never does). The order is a
depth-first post-order from the output nodes taken in id order, inputs in declared order: each
output runs as soon as what it needs is done, and the order does not depend on hashing.
"""
import graphlib

from .workflow import is_link


def node_links(node):
    """(input name, source id, output index) for each linked input of an API-format node."""
    inputs = node.get("inputs") if isinstance(node, dict) else None
    if not isinstance(inputs, dict):
        return []
    return [(name, str(value[0]), value[1]) for name, value in inputs.items() if is_link(value)]


def id_order(node_id):
    """Sort key: numeric ids numerically ("2" before "10"), then the rest as text."""
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


def ancestors(prompt, targets):
    """`targets` and every node they depend on through links to nodes that exist."""
    seen, stack = set(), [t for t in targets if t in prompt]
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.extend(src for _, src, _ in node_links(prompt[node_id]) if src in prompt)
    return seen


def find_cycle(prompt, node_ids):
    """The nodes of one dependency cycle among `node_ids` as [(node id, its input in the cycle)],
    or [] when there is none."""
    graph = {n: {src for _, src, _ in node_links(prompt[n]) if src in node_ids} for n in node_ids}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        cycle = error.args[1]  # [a, b, ..., a]: each is a dependency of the next
        out = []
        for source, node_id in zip(cycle, cycle[1:]):
            name = next((n for n, src, _ in node_links(prompt[node_id]) if src == source), None)
            out.append((node_id, name))
        return out
    return []


def execution_order(prompt, outputs):
    """Node ids to run for `outputs`, each after everything it needs (the graph must be acyclic).
    An explicit stack instead of recursion: a chain of thousands of nodes is a valid graph."""
    order, done = [], set()
    for output in sorted(outputs, key=id_order):
        stack = [(output, iter(node_links(prompt[output])))]
        done.add(output)
        while stack:
            node_id, pending = stack[-1]
            source = next((src for _, src, _ in pending if src not in done), None)
            if source is None:
                stack.pop()
                order.append(node_id)
            else:
                done.add(source)
                stack.append((source, iter(node_links(prompt[source]))))
    return order
