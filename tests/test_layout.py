"""The house reads top to bottom: each package of ``cola`` imports only packages below it, in the order
docs/architecture.md states, and no module imports one that imports it back (at any depth, function-level imports
included; imports under ``if TYPE_CHECKING:`` are annotations only and do not count). ``cola --help`` and every
``cola COMMAND --help`` load no torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
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


def stated_layers() -> list[str]:
    """The layers docs/architecture.md states, bottom to top (its line ``Layers, bottom to top: `a`, `b`, ...``)."""
    text = (ROOT.parent / "docs" / "architecture.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("Layers, bottom to top:"))
    return re.findall(r"`([\w.]+)`", line)


def upward_imports(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """Every import of a module of one layer (``cola.LAYER...``) into a layer above it, as ``a -> b``; a module of a
    layer the list does not name is reported too."""
    def layer(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else None  # the package ``cola`` itself sits above every layer

    found = []
    for module, targets in sorted(graph.items()):
        if layer(module) is not None and layer(module) not in layers:
            found.append(f"{module}: its package {layer(module)!r} has no layer in docs/architecture.md")
            continue
        for target in sorted(targets):
            if layer(module) is not None and layer(target) in layers and \
                    layers.index(layer(target)) > layers.index(layer(module)):
                found.append(f"{module} -> {target}")
    return found


def test_each_package_imports_only_the_layers_below_it():
    layers = stated_layers()
    assert layers[:3] == ["_version", "errors", "storage"] and layers[-1] == "cli"
    assert upward_imports(import_graph(), layers) == []


def test_the_layer_check_finds_an_upward_import():
    layers = ["errors", "storage", "core", "evaluation", "search"]
    graph = {"cola.core.export": {"cola.storage", "cola.evaluation.provenance"}, "cola.search.run": {"cola.core.chain"},
             "cola.storage": {"cola.errors"}, "cola.evaluation.provenance": set(), "cola.core.chain": set(),
             "cola.errors": set()}
    assert upward_imports(graph, layers) == ["cola.core.export -> cola.evaluation.provenance"]
    graph["cola.core.export"] = {"cola.search.store"}  # today's five included store's old place, above core
    assert upward_imports(graph, layers) == ["cola.core.export -> cola.search.store"]


HELP_LOADS_NO_TORCH = """
import sys
from cola.cli import build_parser, main
commands = [a.choices for a in build_parser()._actions if getattr(a, "choices", None)][0]
for argv in [["--help"]] + [[name, "--help"] for name in commands if name != "lm-eval"]:
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted(m for m in ("torch", "transformers", "numpy", "pandas") if m in sys.modules))
"""


def test_the_help_of_cola_and_of_every_command_loads_no_torch():
    out = subprocess.run([sys.executable, "-c", HELP_LOADS_NO_TORCH], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
