"""The import graph of the project's packages: layers by pipeline stage, no circles, no imported entry points.

Layers, lowest first: `rewards` (the scorer) < `scripts.lib` (what stages share) < `data` (prompt, prep,
readiness) < `scripts.eval` < `scripts.rl` and `notebooks` (SFT) < `scripts.bench` < `scripts` (the old spellings).
A module may import its own package or a lower layer, never a higher one and never a sibling package of its own
layer; every import counts, including those inside functions. An entry point (a `__main__` guard or a
`__main__.py`) is run, never imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = {
    "rewards": 0,
    "scripts.lib": 1,
    "data": 2,
    "scripts.eval": 3,
    "scripts.rl": 4,
    "notebooks": 4,
    "scripts.bench": 5,
    "scripts": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The LAYERS key a module belongs to: its longest matching prefix."""
    return max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)


def modules() -> dict[str, Path]:
    roots = ("rewards", "data", "notebooks", "scripts")
    return {module_name(p): p for root in roots for p in (REPO / root).rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (`from pkg import mod` counts as `pkg.mod` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def is_entry_point(path: Path) -> bool:
    return path.name == "__main__.py" or '__name__ == "__main__"' in path.read_text(encoding="utf-8")


GRAPH = {name: imports(path, modules()) - {name} for name, path in modules().items()}


def test_the_graph_covers_the_stages():
    assert {"scripts.rl.launch", "scripts.eval.run_all", "data.readiness", "notebooks.sft"} <= set(GRAPH)
    assert "scripts.rl.config" in GRAPH["scripts.rl.launch"]  # `from scripts.rl import config` is an edge


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_reaches_up_or_sideways(module):
    mine = package_of(module)
    wrong = [
        other
        for other in GRAPH[module]
        if package_of(other) != mine
        and (LAYERS[package_of(other)] >= LAYERS[mine] and not mine.startswith(package_of(other)))
    ]
    assert not wrong, f"{module} ({mine}, layer {LAYERS[mine]}) imports {wrong}: a higher or sibling layer"


def test_no_circles():
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            pytest.fail("import circle: " + " -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(GRAPH.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for module in sorted(GRAPH):
        visit(module, [])


def test_no_module_imports_an_entry_point():
    paths = modules()
    entry_points = {name for name, path in paths.items() if is_entry_point(path)}
    assert {"scripts.eval.evaluate", "scripts.rl.launch", "data.prepare_gsm8k"} <= entry_points
    wrong = {module: sorted(GRAPH[module] & entry_points) for module in GRAPH if GRAPH[module] & entry_points}
    assert not wrong, f"entry points are run (python -m), not imported: {wrong}"


def top_level_names(path: Path) -> set[str]:
    """What a module defines or imports at its top level (what `from it import name` can take)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def test_every_import_of_a_project_module_names_something_it_has():
    """`from scripts.eval import vllm_cpu` after vllm_cpu moved to scripts.lib broke `make bench` unnoticed: no test
    imports the benchmarks. Every `from <project module> import name` must name a submodule or a top-level name."""
    paths = modules()
    wrong = []
    for module, path in sorted(paths.items()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in paths:
                have = top_level_names(paths[node.module])
                for alias in node.names:
                    if f"{node.module}.{alias.name}" not in paths and alias.name not in have | {"*"}:
                        wrong.append(f"{module}: from {node.module} import {alias.name}")
    assert not wrong, wrong
