"""The package's shape: no import circle, no module over 400 lines, and one meaning for a leading ``_``.

Imports are read with ``ast`` (every import, also those inside functions and under ``TYPE_CHECKING``:
a late import hides a circle from Python, not from the design).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "litellm_cloud"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> Iterator[str]:
    """The modules of the package ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + ([node.module] if node.module else [])
                target = ".".join(base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub
                elif target in MODULES:
                    yield target


GRAPH = {name: set(_imported(name, path)) - {name} for name, path in MODULES.items()}


def test_no_import_circle() -> None:
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str], done: set[str]) -> None:
        for nxt in sorted(GRAPH[node]):
            if nxt in trail:
                circles.append([*trail[trail.index(nxt):], nxt])
            elif nxt not in done:
                visit(nxt, [*trail, nxt], done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(GRAPH):
        if start not in done:
            visit(start, [start], done)
    assert circles == []


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_a_private_module_is_imported_only_inside_its_package() -> None:
    """``_name.py`` is private to the package it sits in; other packages go through a public module."""
    outside = []
    for name, targets in GRAPH.items():
        for target in targets:
            parts = target.split(".")
            private = next((i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")), None)
            if private is not None and not f"{name}.".startswith(".".join(parts[:private]) + "."):
                outside.append(f"{name} -> {target}")
    assert outside == []
