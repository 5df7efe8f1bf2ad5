"""The package's shape, read from the source with `ast`: `sld_core` stands alone, and no modules
import each other in a cycle.

- `sld_core` (the library) imports nothing from `nodes` or `headless`, and nothing of ComfyUI
  (`comfy`, `folder_paths`, ...), anywhere in a file, functions included: a lazy import is still a
  dependency.
- No import cycle among the imports that run when a module is loaded (module level, class bodies,
  `if`/`try` blocks at the top): such a cycle breaks depending on which module is imported first.
  Importing `a.b.c` also runs the packages `a` and `a.b`; those edges count, except to the importer's
  own packages, which are always loading already.
- Imports inside functions (lazy imports) are how a module defers a dependency that may only be
  imported later or only in some hosts: `nodes.sampling` reaches `nodes.comfy_bridge` that way, and
  only inside ComfyUI. They break a load-time cycle, and that is their intended use; but they do not
  make two modules that need each other independent (issue 16's comfy_bridge <-> sampling cycle was
  lazy on both sides). So a second test counts them too: a cycle through lazy imports means the
  shared part belongs in a module of its own (as `nodes.sld_inputs` is now).
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_sld"
ROOMS = ("sld_core", "nodes", "headless")
# ComfyUI's top-level modules and packages (DESIGN.md: never imported by sld_core, never shadowed).
COMFYUI_MODULES = {"comfy", "comfy_extras", "comfy_api", "comfy_execution", "folder_paths", "latent_preview",
                   "node_helpers", "nodes", "execution", "server", "main"}


def discover(root, package, rooms):
    """{module name: (path, is_package)} for the package's top `__init__.py` and every file of `rooms`."""
    modules = {package: (root / "__init__.py", True)}
    for room in rooms:
        for path in sorted((root / room).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join((package, *(parts[:-1] if is_package else parts)))
            modules[name] = (path, is_package)
    return modules


class _Imports(ast.NodeVisitor):
    """(node, at_load_time) of every import statement; at_load_time is False inside a function."""

    def __init__(self):
        self.found = []
        self._depth = 0

    def visit_Import(self, node):
        self.found.append((node, self._depth == 0))

    visit_ImportFrom = visit_Import

    def _function(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node):
        if "TYPE_CHECKING" in ast.unparse(node.test):  # never runs
            return
        self.generic_visit(node)


def imports(name, path, is_package, modules):
    """[(imported module, line, at_load_time)]: absolute names; relative ones resolved against `name`."""
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(), str(path)))
    base = name if is_package else name.rpartition(".")[0]
    found = []
    for node, at_load in visitor.found:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                module = f"{anchor}.{node.module}" if node.module else anchor
            else:
                module = node.module
            # `from package import submodule` imports the submodule; `from module import name` the module.
            targets = [module] + [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
        found += [(target, node.lineno, at_load) for target in targets]
    return found


def import_graph(modules, lazy=False):
    """{module: {imported module of the package: line}}: the imports that run when it loads, and with
    `lazy` also those inside functions."""
    graph = {}
    for name, (path, is_package) in modules.items():
        own_packages = {name.rsplit(".", k)[0] for k in range(name.count(".") + 1)}
        edges = {}
        for target, line, at_load in imports(name, path, is_package, modules):
            if not (at_load or lazy):
                continue
            # The target and the packages it sits in, which loading it runs first.
            for k in range(target.count(".") + 1):
                module = target.rsplit(".", k)[0]
                if module in modules and module not in own_packages:
                    edges.setdefault(module, line)
        graph[name] = edges
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def describe(component, graph, modules):
    """One line per import edge inside a cycle: where it is written."""
    lines = []
    for name in component:
        for target, line in sorted(graph[name].items()):
            if target in component:
                path = modules[name][0].relative_to(ROOT) if modules[name][0].is_relative_to(ROOT) else modules[name][0]
                lines.append(f"  {name} -> {target}   ({path}:{line})")
    return "\n".join(lines)


def core_violations(modules, package=PACKAGE):
    """Imports anywhere in sld_core of nodes, headless or ComfyUI: [(module, line, imported)]."""
    forbidden = tuple(f"{package}.{room}" for room in ROOMS if room != "sld_core")
    bad = []
    for name, (path, is_package) in modules.items():
        if not name.startswith(f"{package}.sld_core"):
            continue
        for target, line, _ in imports(name, path, is_package, modules):
            if target.startswith(forbidden) or target.split(".")[0] in COMFYUI_MODULES:
                bad.append((name, line, target))
    return bad


def test_sld_core_imports_nothing_from_nodes_headless_or_comfyui():
    modules = discover(ROOT, PACKAGE, ROOMS)
    assert any(name.startswith(f"{PACKAGE}.sld_core.") for name in modules)
    bad = core_violations(modules)
    assert not bad, "sld_core must not import nodes, headless or ComfyUI:\n" + "\n".join(
        f"  {name} line {line}: imports {target}" for name, line, target in bad)


def test_no_import_cycle_when_modules_load():
    modules = discover(ROOT, PACKAGE, ROOMS)
    graph = import_graph(modules)
    found = cycles(graph)
    assert not found, "import cycles among module-level imports (move the shared part into a module of its " \
                      "own, or one import into the function that needs it):\n" + "\n\n".join(
                          describe(c, graph, modules) for c in found)


def test_no_two_modules_need_each_other_even_through_lazy_imports():
    modules = discover(ROOT, PACKAGE, ROOMS)
    graph = import_graph(modules, lazy=True)
    found = cycles(graph)
    assert not found, "import cycles counting imports inside functions (move the shared part into a module " \
                      "of its own):\n" + "\n\n".join(describe(c, graph, modules) for c in found)


# --- the checks above can fail: a made-up package with the faults they look for -----------------------

def _package(tmp_path, files):
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return discover(tmp_path, "pkg", ROOMS)


def test_the_checks_find_cycles_and_core_imports_in_a_made_up_package(tmp_path):
    modules = _package(tmp_path, {
        "__init__.py": "",
        "sld_core/__init__.py": "",
        "sld_core/a.py": "from . import b\n",
        "sld_core/b.py": "import math\nclass B:\n    from .a import x\n",  # a class body runs at load time
        "sld_core/c.py": "def f():\n    from ..headless import run\n    import folder_paths\n",
        "nodes/__init__.py": "from .one import X\n",
        "nodes/one.py": "from .two import Y\n",
        "nodes/two.py": "def f():\n    from .one import X\n",  # lazy: a cycle only when lazy imports count
        "nodes/three.py": "from ..sld_core.a import x\n",
        "headless/__init__.py": "",
        "headless/run.py": "from ..nodes.one import X\n",  # runs nodes/__init__ first: counted, no cycle
    })
    graph = import_graph(modules)
    assert cycles(graph) == [["pkg.sld_core.a", "pkg.sld_core.b"]]
    with_lazy = [["pkg.nodes.one", "pkg.nodes.two"], ["pkg.sld_core.a", "pkg.sld_core.b"]]
    assert cycles(import_graph(modules, lazy=True)) == with_lazy
    assert "pkg.nodes" in graph["pkg.headless.run"] and "pkg.sld_core" in graph["pkg.nodes.three"]
    assert set(graph["pkg.nodes.one"]) == {"pkg.nodes.two"}  # its own package `pkg.nodes` is loading already
    assert {(n, t) for n, _, t in core_violations(modules, "pkg")} == {
        ("pkg.sld_core.c", "pkg.headless"), ("pkg.sld_core.c", "pkg.headless.run"), ("pkg.sld_core.c", "folder_paths")}
