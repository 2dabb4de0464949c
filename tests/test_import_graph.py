"""Imports point one way: no import cycle inside src/warmstart, between modules or between its parts.

The graph is read from the source with ``ast`` (nothing is imported). **Function-level imports count**: a lazy
``from warmstart.report import ...`` inside a function is imported as soon as that function runs, so it is
a dependency like any other; laziness keeps ``import warmstart`` free of torch, it does not license a cycle.
Two graphs are checked:

* modules (``warmstart.experiments.compare`` -> ``warmstart.experiments.compare_demo``), and
* parts: ``warmstart.<first name>`` (``experiments``, ``report``, ``init``, ``results``, ``api``, ...), the
  layering cli -> api -> experiments -> report -> init/transfer -> engine/data. A part may import itself.

``warmstart/__init__.py`` names its lazy front door as strings (PEP 562) and imports none of them: it is no edge.
Private names (``_x``) are not imported across modules; the package's private *modules* (``_lazy``,
``_process``, ``data._torchvision``) are its internals and may be imported inside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "warmstart"


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _imports(tree: ast.AST, module: str, is_pkg: bool) -> list[tuple[str, str, int]]:
    """(imported module or name, name imported from it or '', line): every import, also inside functions."""
    found = []
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            found += [(base, a.name, node.lineno) for a in node.names]
    return found


def module_graph() -> dict[str, set[str]]:
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, (path, is_pkg) in mods.items():
        edges = set()
        for base, name, _ in _imports(ast.parse(path.read_text(encoding="utf-8")), module, is_pkg):
            target = resolve(f"{base}.{name}") if name and f"{base}.{name}" in mods else resolve(base)
            if target is not None and target != module and target != "warmstart":
                edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]`` (depth-first search, three colours), or None."""
    colour = {v: 0 for v in graph}  # 0 unseen, 1 on the current path, 2 done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        colour[v] = 1
        path.append(v)
        for w in sorted(graph.get(v, ())):
            if colour.get(w, 0) == 1:
                return path[path.index(w):] + [w]
            if colour.get(w, 0) == 0:
                found = visit(w)
                if found:
                    return found
        colour[v] = 2
        path.pop()
        return None

    for v in sorted(graph):
        if colour[v] == 0:
            found = visit(v)
            if found:
                return found
    return None


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    def part(m: str) -> str:
        return ".".join(m.split(".")[:2])

    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        out.setdefault(part(a), set()).update(part(b) for b in targets if part(b) != part(a))
    return out


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle
    assert part_graph({"w.x.a": {"w.y.b"}, "w.y.b": {"w.x.c"}, "w.x.c": set()}) == {"w.x": {"w.y"}, "w.y": {"w.x"}}


def test_the_graph_sees_function_level_and_relative_imports():
    graph = module_graph()
    assert "warmstart.experiments.rank" in graph["warmstart.api"]  # imported inside api.rank_options only
    assert "warmstart.engine.layout" in graph["warmstart.results"]


def test_no_import_cycle_between_modules():
    cycle = find_cycle(module_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_between_the_parts_of_the_package():
    cycle = find_cycle(part_graph(module_graph()))
    assert cycle is None, "import cycle between parts: " + " -> ".join(cycle or [])


def test_no_private_name_is_imported_from_another_module():
    mods = _modules()
    bad = []
    for module, (path, is_pkg) in mods.items():
        for base, name, line in _imports(ast.parse(path.read_text(encoding="utf-8")), module, is_pkg):
            if not base.startswith("warmstart") or not name.startswith("_") or name.startswith("__"):
                continue
            if f"{base}.{name}" not in mods:  # a private module of the package is its own internals
                bad.append(f"{path.relative_to(SRC)}:{line} imports {base}.{name}")
    assert bad == [], "private names imported across modules (make them public or move them): " + "; ".join(bad)
