"""The shape of the package: short modules, arrows one way, no import circles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "compress"
MAX_LINES = 300

#: Higher layers may import lower ones and their own layer, never a higher one.
LAYERS = {
    "cli": 5,
    "run": 4,
    "search": 4,
    "methods": 3,
    "schedules": 3,
    "analysis": 3,
    "distill": 3,
    "measure": 2,
    "artifact": 2,
    "train": 2,
    "distributed": 2,
    "tracking": 2,
    "reporting": 2,
    "data": 1,
    "models": 1,
    "quant": 1,
    "config": 0,
    "errors": 0,
    "plugins": 0,
    "downloads": 0,
    "__main__": 6,
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, known: set[str]) -> set[str]:
    """compress modules `path` imports, at any depth (a lazy import counts too), but not
    those imported only for type checking."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("compress"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compress"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found & known


def layer(module: str) -> int:
    return LAYERS[module.split(".")[1]] if "." in module else 6


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_is_short(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_every_package_has_a_layer() -> None:
    tops = {name.split(".")[1] for name in modules() if "." in name}
    assert tops <= set(LAYERS), sorted(tops - set(LAYERS))


def test_arrows_point_down() -> None:
    upward = [
        f"{source} -> {target}"
        for source, targets in graph().items()
        for target in targets
        if layer(target) > layer(source)
    ]
    assert upward == []


def test_no_import_circle() -> None:
    edges = graph()
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            cycle = [*path[path.index(node) :], node]
            raise AssertionError("import circle: " + " -> ".join(cycle))
        if node in done:
            return
        for target in sorted(edges[node]):
            if target != node and not node.startswith(f"{target}."):  # a package's own init
                walk(target, [*path, node])
        done.add(node)

    for name in sorted(edges):
        walk(name, [])


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module


def test_no_circle_between_packages() -> None:
    """Package to package too: `tracking` may not use `reporting` while `reporting` uses
    `tracking` (each package's modules taken together)."""
    edges: dict[str, set[str]] = {}
    for source, targets in graph().items():
        edges.setdefault(package(source), set()).update(package(t) for t in targets)
    for source, targets in edges.items():
        for target in targets - {source}:
            assert source not in edges.get(target, set()), f"{source} <-> {target}"


def test_the_pipeline_does_not_dispatch_on_plugin_types() -> None:
    for path in (PACKAGE / "run").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                raise AssertionError(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
