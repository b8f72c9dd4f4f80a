"""House check: the import graph of src/losslab has no circles (read with ``ast``, nothing imported).

Which imports count: **both module-level and function-level** ``import``/``from ... import``
statements (every statement that can run), except those under ``if TYPE_CHECKING:`` (they never
run). Why both: losslab imports most of its dependencies lazily, inside functions, so that
``import losslab`` stays light — ``cli``'s modules, for instance, import almost nothing at module
level. A check of module-level imports alone would see little of the architecture, and a lazy import
is the usual way to hide a circle rather than remove it: the known ``runs`` <-> ``train`` circle
exists only through function-level imports. The import-time graph (module level only) is also
checked on its own, since a circle there can break ``import`` outright.

Not counted: ``importlib.import_module`` (the registries' discovery of CLI commands and survey rows)
and the implicit import of a package's ``__init__`` when one of its submodules is imported.
"""
from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class ImportGraph:
    """Modules of a package and the imports between them (module -> {imported module: [lines]})."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module_level_only: bool):
    """Yield the import statements of a module that run (optionally only those at module level)."""
    def walk(nodes, top):
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                if top or not module_level_only:
                    yield node
                continue
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from walk(node.orelse, top)
                continue
            in_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt) or isinstance(child, ast.excepthandler):
                    yield from walk([child], top and not in_function)
    yield from walk(tree.body, True)


def import_graph(package_dir: Path, *, module_level_only: bool = False) -> ImportGraph:
    """The graph of imports between the modules of the package in ``package_dir`` (read with ast)."""
    g = ImportGraph(package_dir.parent)
    is_pkg: dict[str, bool] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if pkg else parts)
        g.files[name] = path
        is_pkg[name] = pkg
    for name, path in g.files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        out: dict[str, list[int]] = {}
        for node in _imports(tree, module_level_only):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_pkg[name] else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # "from p import x": x is a submodule (p's __init__ runs only as its parent, like any
                # import of p.x, which is not counted) or a name defined in p's __init__ (p counts).
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in g.files]
                targets = subs + ([mod] if len(subs) < len(node.names) else [])
            for t in targets:
                if t in g.files and t != name:
                    out.setdefault(t, []).append(node.lineno)
        g.edges[name] = out
    return g


def circles(g: ImportGraph) -> list[list[str]]:
    """The strongly connected components with more than one module (each holds at least one circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in g.files:  # iterative Tarjan: no recursion limit on deep graphs
        if root in index:
            continue
        work = [(root, iter(g.edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(g.edges[w])))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def describe(g: ImportGraph, component: list[str]) -> str:
    """One circle through the component's first module, with the file and line of each import."""
    start, members = component[0], set(component)
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:  # shortest path start -> ... -> start inside the component
        v = queue.popleft()
        for w in g.edges[v]:
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
        if start in prev:
            break
    path = [start]
    while True:
        path.append(prev[path[-1]])
        if path[-1] == start:
            break
    path.reverse()
    steps = [f"{a} -> {b} ({g.files[a].relative_to(g.root).as_posix()}:{g.edges[a][b][0]})"
             for a, b in zip(path, path[1:])]
    return f"circle among {component}:\n    " + "\n    ".join(steps)


# ---- the checker itself, on a package with known circles -----------------------------------------

def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root


def test_checker_finds_module_and_function_level_circles(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import f\n",
        "b.py": "def f():\n    from . import a\n",           # a -> b at module level, b -> a in a function
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import X\n",
        "d.py": "from .c import Y\n",                         # c -> d only for type checking: no circle
        "sub/__init__.py": "from .e import g\n",                # sub -> sub.e; sub.h's "from ..sub import e" is h -> e
        "sub/e.py": "import pkg.sub.h\n",
        "sub/h.py": "try:\n    from ..sub import e\nexcept ImportError:\n    pass\n",
    })
    g = import_graph(root)
    assert g.edges["pkg.a"] == {"pkg.b": [1]}
    assert g.edges["pkg.b"] == {"pkg.a": [2]}
    assert g.edges["pkg.c"] == {}
    assert circles(g) == [["pkg.a", "pkg.b"], ["pkg.sub.e", "pkg.sub.h"]]
    assert "pkg.a -> pkg.b (pkg/a.py:1)" in describe(g, ["pkg.a", "pkg.b"])
    assert "pkg.b -> pkg.a (pkg/b.py:2)" in describe(g, ["pkg.a", "pkg.b"])
    top = import_graph(root, module_level_only=True)
    assert circles(top) == [["pkg.sub.e", "pkg.sub.h"]]  # b -> a runs only when f() is called


def test_the_package_graph_is_read():
    g = import_graph(SRC / "losslab")
    assert "losslab.cli.main" in g.files and "losslab.experiments" in g.files
    assert "losslab.errors" in g.edges["losslab.params"]
    assert sum(len(e) for e in g.edges.values()) > 200


# ---- losslab ------------------------------------------------------------------------------------

def test_no_import_circles_at_import_time():
    """Module-level imports only: a circle here can make ``import losslab.x`` fail outright."""
    g = import_graph(SRC / "losslab", module_level_only=True)
    found = circles(g)
    assert not found, "\n".join(describe(g, c) for c in found)


def test_no_import_circles():
    """Module- and function-level imports: the layers import downwards only (docs/architecture.md)."""
    g = import_graph(SRC / "losslab")
    found = circles(g)
    assert not found, "\n".join(describe(g, c) for c in found)


# The layers of docs/architecture.md, bottom (0) to top: a module may import its own layer and the
# layers below. Keyed by the first name under ``losslab`` ("" is ``losslab/__init__.py``); every
# ``__main__`` module counts as the CLI.
LAYERS = {
    # foundation ("results" and "_functional" are the homes issue 17 gives the results layer and the core)
    "": 0, "errors": 0, "settings": 0, "_io": 0, "results": 0, "_imports": 0,
    "data": 1, "models": 1,                                   # data, models
    "params": 2, "evaluate": 2, "_functional": 2, "optim": 2,  # the functional core (optim: SGD/Adam/RMSprop)
    "config": 3, "runs": 3, "train": 3,                       # the recording trainer
    "directions": 4, "surface": 4, "interpolation": 4, "plot": 4,  # analyses
    "surface_result": 4, "precision": 4, "_certainty": 4, "_adaptive_surface": 4,
    "curvature": 4, "connect": 4, "probes": 4, "subspace": 4,
    "distributed": 5,
    "experiments": 6,
    "report": 7,
    "cli": 8, "__main__": 8,
}


def _layer_key(module: str) -> str:
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "__main__"  # ``python -m losslab[.pkg]``: an entry point, like the CLI
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer():
    g = import_graph(SRC / "losslab")
    missing = sorted({_layer_key(m) for m in g.files} - set(LAYERS))
    assert not missing, f"place {missing} in a layer: LAYERS here and the picture in docs/architecture.md"


def test_layers_import_downwards():
    """No module imports a layer above its own (module- and function-level imports)."""
    g = import_graph(SRC / "losslab")
    up = [f"{a} (layer {LAYERS[_layer_key(a)]}) -> {b} (layer {LAYERS[_layer_key(b)]}) at "
          f"{g.files[a].relative_to(g.root).as_posix()}:{lines[0]}"
          for a, targets in g.edges.items() for b, lines in targets.items()
          if LAYERS.get(_layer_key(b), -1) > LAYERS.get(_layer_key(a), 99)]
    assert not up, "imports that go up a layer:\n" + "\n".join(up)


if __name__ == "__main__":  # pragma: no cover - print the circles by hand
    pytest.main([__file__, "-q"])
