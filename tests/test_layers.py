"""The layers of `bench/`, read from the source: the core at the top of the package (everything that computes a
number), then the subpackages `data` < `plan` < `execute` < `report` < `cli`. No module imports a module of a layer
above its own, and the imports between modules form no cycle. The imports are parsed, not listed, so this stays
true as the code changes."""

from __future__ import annotations

import ast
from pathlib import Path

from bench.versions import BENCH_DIR, CORE_HELPERS

LAYERS = ["core", "data", "plan", "execute", "report", "cli"]
"""Bottom to top; a module may import its own layer and those below."""


def module_name(path: Path) -> str:
    parts = path.relative_to(BENCH_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in BENCH_DIR.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "core"


def imported(path: Path) -> set[str]:
    """The bench modules that the file at `path` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
    found.discard(module_name(path))
    return {name for name in found if name in MODULES}


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def test_every_module_is_in_a_layer_and_the_core_is_what_is_hashed():
    assert set(LAYERS[1:]) == {path.name for path in BENCH_DIR.iterdir() if (path / "__init__.py").exists()}
    core = {name for name in MODULES if layer(name) == "core"}
    assert {f"{name.split('.')[-1]}.py" for name in core if name != "bench"} | {"__init__.py"} == \
        {path.name for path in BENCH_DIR.glob("*.py")}
    assert set(CORE_HELPERS) <= {path.name for path in BENCH_DIR.glob("*.py")}


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{name} ({layer(name)}) imports {other} ({layer(other)})" for name, others in sorted(GRAPH.items())
              for other in sorted(others) if LAYERS.index(layer(other)) > LAYERS.index(layer(name))]
    assert upward == []


def test_the_imports_form_no_cycle():
    """A depth-first search over every import (function-level ones too) finds no module reachable from itself,
    apart from a package's __init__ re-exporting its own modules."""
    cycles = []

    def visit(name: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        for other in sorted(GRAPH[name]):
            if other in on_path:
                cycle = path[path.index(other):] + [other]
                if not is_reexport(cycle):
                    cycles.append(" -> ".join(cycle))
            elif other not in done:
                visit(other, [*path, other], on_path | {other}, done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(GRAPH):
        if name not in done:
            visit(name, [name], {name}, done)
    assert cycles == []


def is_reexport(cycle: list[str]) -> bool:
    """A package's __init__ importing one of its own modules, which imports the package (`from bench import ...` for
    the plugin API) is not a cycle of two modules."""
    return len(set(cycle)) == 2 and any(MODULES[name].name == "__init__.py" for name in cycle)


def test_the_graph_is_read_from_the_source():
    assert "bench.spec" in GRAPH["bench.trainer"] and "bench.plan.grid" in GRAPH["bench.execute.tuning"]
    assert layer("bench.trainer") == "core" and layer("bench.report.leaderboard") == "report"
    assert layer("bench.cli") == "cli" and layer("bench") == "core"
