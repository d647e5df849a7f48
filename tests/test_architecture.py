"""The package's shape, checked from its imports: one layer per folder, imports only downward.

The order is documented in docs/ARCHITECTURE.md; a module may import its own layer or any layer
below it, never one above, and no two modules may import each other, even lazily (an import inside
a function counts: it is still a dependency, only a late one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "loadtest"

# Bottom to top. Keep in step with docs/ARCHITECTURE.md.
LAYERS = (
    "errors",
    "core",
    "rules",
    "engine",
    "wire",
    "models",
    "targets",
    "observe",
    "server",
    "stub",
    "shards",
    "scenarios",
    "analysis",
    "report",
    "commands",
    "cli",
)
# Inside a layer whose folder has rooms, the rooms are ordered too (bottom to top): the MLPerf
# scenarios never reach into a search or an experiment, and a search may play an experiment (a
# mix's peak plays the mix). Keep in step with docs/ARCHITECTURE.md.
SUBLAYERS = {"scenarios": ("target_flags", "mlperf", "run", "experiments", "searches")}
# Entry points that only route to the command layer (`python -m loadtest.models` in the models
# image); nothing imports them.
ENTRY_POINTS = {"loadtest.models.__main__"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every loadtest module `name` imports, at the top or inside a function."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        candidates: list[str] = []
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate.startswith("loadtest.") and candidate != name:
                found.add(candidate)
    return found


def _layer(module: str) -> int:
    top = module.split(".")[1]
    assert top in LAYERS, f"{module} is in no documented layer; add its folder to LAYERS"
    return LAYERS.index(top)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_every_module_belongs_to_a_layer() -> None:
    for module in _modules():
        if module != "loadtest":
            _layer(module)


def test_imports_only_go_down_the_layers() -> None:
    upward = []
    for module, imported in _graph().items():
        if module == "loadtest" or module in ENTRY_POINTS:
            continue
        for other in imported:
            if other != "loadtest" and _layer(other) > _layer(module):
                upward.append(f"{module} -> {other}")
    assert not upward, "imports that run up the layer order:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle between layers.
    edges = {
        m: {o for o in deps if not (m.startswith(o + ".") or o.startswith(m + "."))}
        for m, deps in graph.items()
    }
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _room(module: str) -> tuple[str, int] | None:
    """(layer, the room's index) for a module in a layer with rooms, else None."""
    parts = module.split(".")
    rooms = SUBLAYERS.get(parts[1]) if len(parts) > 2 else None
    if rooms is None:
        return None
    assert parts[2] in rooms, f"{module} is in no documented room of {parts[1]}/; add it"
    return parts[1], rooms.index(parts[2])


def test_imports_inside_a_layer_only_go_down_its_rooms():
    upward = []
    for module, imported in _graph().items():
        mine = _room(module)
        for other in imported:
            theirs = _room(other)
            if mine and theirs and mine[0] == theirs[0] and theirs[1] > mine[1]:
                upward.append(f"{module} -> {other}")
    assert not upward, "imports that run up the rooms of a layer:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize("layer", ["core", "rules", "engine", "scenarios", "report"])
def test_nothing_below_commands_imports_the_command_line(layer: str) -> None:
    for module, imported in _graph().items():
        if module.startswith(f"loadtest.{layer}."):
            bad = [o for o in imported if o.startswith(("loadtest.commands", "loadtest.cli"))]
            assert not bad, f"{module} imports {bad}"


def test_the_stub_and_the_targets_share_only_the_wire() -> None:
    """The stub is a server, not a client: it speaks the protocols through wire/, never through
    targets/; and wire/ knows no more of the package than the vocabulary and the errors."""
    for module, imported in _graph().items():
        if module.startswith("loadtest.stub"):
            bad = [o for o in imported if o.startswith("loadtest.targets")]
            assert not bad, f"{module} imports {bad}"
        if module.startswith("loadtest.wire"):
            allowed = ("loadtest.core", "loadtest.errors", "loadtest.wire")
            bad = [o for o in imported if not o.startswith(allowed)]
            assert not bad, f"{module} imports {bad}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself can fail: a core module importing report is caught."""
    module = tmp_path / "loadtest" / "core" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text("from loadtest.report.results import RunReport\n")
    found = _imports("loadtest.core.bad", module, {"loadtest.report.results", "loadtest.core.bad"})
    assert found == {"loadtest.report.results"}
    assert _layer("loadtest.report.results") > _layer("loadtest.core.bad")
