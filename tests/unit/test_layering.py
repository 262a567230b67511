"""The house's layering, pinned: every import points down, the domain stays pure, only flows call tasks,
no module imports itself round a circle, and no project import hides inside a function to dodge one."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Bottom to top; a module may import its own layer or any below it (remediation/__init__.py says why).
LAYERS: list[tuple[str, ...]] = [
    ("remediation.errors",),
    ("remediation.domain",),
    ("remediation.clients",),
    ("remediation.target",),
    ("remediation.records",),
    ("remediation.evidence",),
    ("remediation.audit",),
    ("tasks",),
    ("remediation.flowkit",),
    ("remediation.alerts", "remediation.runner", "remediation.cli"),
    ("flows",),
]
#: Apps import their heavy parts when a command needs them (a CLI answers --help in a blink); the drill
#: points Prefect at the stack's server before anything imports Prefect's settings.
LAZY_OK = ("remediation.cli", "remediation.alerts.__main__", "sandbox.drill")
IO_LIBRARIES = ("prefect", "httpx", "boto3", "botocore", "psycopg", "psycopg_pool", "paramiko", "asyncpg")


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("remediation", "tasks", "flows", "sandbox"):
        for path in (ROOT / package).rglob("*.py"):
            if "release_template" in path.parts:
                continue  # the sandbox's deployed application, not our code
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at top level?) for every import, TYPE_CHECKING blocks left out."""
    tree = ast.parse(path.read_text())
    checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING") for n in ast.walk(node)}
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: -node.level] if path.name != "__init__.py" else \
                    name.split(".")[: len(name.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module, id(node) in top
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:
                    yield f"{module}.{alias.name}", id(node) in top


def _ours(module: str) -> str | None:
    """The project module an import names (a package, or a module inside one)."""
    while module and module not in MODULES:
        module = module.rpartition(".")[0]
    return module or None


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


@functools.cache
def _edges() -> dict[str, set[str]]:
    return {name: {t for imported, _ in _imports(name, path) if (t := _ours(imported)) and t != name}
            for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _layer(n) is not None))
def test_every_import_points_down(name: str) -> None:
    mine = _layer(name)
    assert mine is not None
    upward = sorted(t for t in _edges()[name] if (rank := _layer(t)) is not None and rank > mine)
    assert not upward, f"{name} (layer {mine}) imports from above: {upward}"


def test_the_domain_plans_without_prefect_clients_or_io() -> None:
    for name, path in MODULES.items():
        if _layer(name) != 1:
            continue
        impure = sorted({m for m, _ in _imports(name, path) if m.split(".")[0] in IO_LIBRARIES})
        assert not impure, f"{name} imports {impure}"


def test_clients_know_nothing_of_prefect() -> None:
    for name, path in MODULES.items():
        if name.startswith("remediation.clients"):
            assert not [m for m, _ in _imports(name, path) if m.split(".")[0] == "prefect"], name


def test_only_flows_call_tasks() -> None:
    callers = sorted(n for n, targets in _edges().items()
                     if any(t.startswith("tasks") for t in targets) and not n.startswith(("tasks", "flows")))
    assert not callers, f"modules other than flows import tasks: {callers}"


def test_no_import_circles() -> None:
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            # A package's __init__ re-exporting its own modules is not a circle.
            if node == nxt.rpartition(".")[0] or nxt == node.rpartition(".")[0]:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


def test_no_project_import_hides_inside_a_function() -> None:
    hidden = sorted(f"{name} → {imported}" for name, path in MODULES.items() if not name.startswith(LAZY_OK)
                    for imported, top in _imports(name, path) if not top and _ours(imported))
    assert not hidden, f"function-level imports of our own modules: {hidden}"
