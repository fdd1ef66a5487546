"""The house reads top to bottom: no module of ``cola`` imports one that imports it back (at any depth, function-level
imports included; imports under ``if TYPE_CHECKING:`` are annotations only and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import cola

ROOT = Path(cola.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The ``cola`` modules a file imports at run time."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    typing_only = {id(node) for stmt in ast.walk(tree) if isinstance(stmt, ast.If)
                   and ast.unparse(stmt.test).endswith("TYPE_CHECKING") for node in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cola")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("cola"):
                continue
            for alias in node.names:  # `from . import gsm8k` imports a sibling module, not the package's names
                is_module = (ROOT.parent / (target.replace(".", "/") + f"/{alias.name}.py")).exists()
                found.add(f"{target}.{alias.name}" if is_module else target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # importing a.b.c runs a/__init__ and a/b/__init__ first: a package counts as imported too, unless it is
        # one of the importing module's own packages (already initialising when the module runs)
        own = {name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)}
        targets = {".".join(t.split(".")[:k]) for t in _imports(path) for k in range(2, t.count(".") + 2)}
        graph[name] = {t for t in targets if t in modules and t != name and t not in own}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules (the first repeated at the end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert "cola.core.executor" in graph and "cola.core.models" in graph["cola.core.executor"]  # the graph is read at
    all
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_model_loading_sits_above_the_executor():
    graph = import_graph()
    assert "cola.core.executor" in graph["cola.core.loading"]
    assert not {"cola.core.loading", "cola.evaluation.provenance"} & graph["cola.core.executor"]
    assert not {"cola.core.loading", "cola.core.executor"} & graph["cola.core.models"]
