"""Which nodes run, and in what order: the output nodes' ancestors, dependencies first.

Like ComfyUI, only nodes an output node depends on run (a dangling node never does). The order is a
depth-first post-order from the output nodes taken in id order, each node's inputs largest branch first
(ties in declared order): each output runs as soon as what it needs is done, and the order does not
depend on hashing. Largest first finishes a long branch (an SDXL base pass) before starting a short one
(the refiner's loader), so an executor that releases outputs after their last use (run.py) never holds
both branches' models at once.
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
    weight = branch_weights(prompt, ancestors(prompt, outputs))
    order, done = [], set()

    def sources(node_id):  # largest branch first; sorted() is stable, so ties keep the declared order
        return iter(sorted((src for _, src, _ in node_links(prompt[node_id])), key=lambda s: -weight.get(s, 0)))

    for output in sorted(outputs, key=id_order):
        stack = [(output, sources(output))]
        done.add(output)
        while stack:
            node_id, pending = stack[-1]
            source = next((src for src in pending if src not in done), None)
            if source is None:
                stack.pop()
                order.append(node_id)
            else:
                done.add(source)
                stack.append((source, sources(source)))
    return order


def branch_weights(prompt, node_ids):
    """{node id: how many nodes its branch has}, a node shared by two inputs counted under each (a
    cheap stand-in for the size of its ancestor set: linear time, and equal to it on trees)."""
    weight, stack, opened = {}, sorted(node_ids, key=id_order), set()
    while stack:
        node_id = stack[-1]
        if node_id in weight:
            stack.pop()
            continue
        sources = [src for _, src, _ in node_links(prompt[node_id]) if src in node_ids]
        missing = [src for src in sources if src not in weight and src not in opened]  # opened: a cycle
        if node_id not in opened and missing:
            opened.add(node_id)
            stack.extend(missing)
            continue
        stack.pop()
        weight[node_id] = 1 + sum(weight.get(src, 0) for src in sources)
    return weight
