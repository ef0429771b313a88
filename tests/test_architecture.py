"""The layout's rules, checked on the source: each room imports only the rooms inside it, the
domain stays pure, the library's internals stay in their one adapter, tests keep to their own
layer's private names, and nothing points outside the repository."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each room and the rooms it may import: dependencies point inwards.
MAY_IMPORT: dict[str, set[str]] = {
    "domain": set(),
    "client": {"domain"},
    "formats": {"domain"},
    "witness": {"domain"},
    "store": {"domain"},
    "projections": {"domain", "store"},
    "audit": {"domain", "store", "projections", "client"},
    "service": {"domain", "store", "projections", "audit", "client", "witness"},
    "fixtures": {"domain", "store", "projections", "service"},
    "api": {"domain", "store", "projections", "audit", "service", "formats"},
    "web": {"domain", "store", "projections", "audit", "service", "api", "formats"},
    "cli": {
        "domain", "store", "projections", "audit", "service", "api", "fixtures", "client", "formats",
        "witness", "web",
    },
    "bench": {
        "domain", "store", "projections", "audit", "service", "api", "fixtures", "cli", "client",
        "formats", "witness", "web",
    },
}
ROOMS = set(MAY_IMPORT)

# What the domain may not use: it holds the rules, not their storage or their configuration.
IMPURE = {"psycopg", "psycopg_pool", "sqlite3", "os", "httpx", "fastapi", "starlette", "uvicorn"}

# The eventsourcing library's private names the ledger relies on; domain/library.py alone uses them.
LIBRARY_INTERNALS = {
    "_Batch", "_create", "__base_init__", "_record", "_take_snapshots", "_notify", "_lock_table",
    "_insert_events", "_insert_stored_events", "_fetch_ids_after_insert_events", "_data_", "_type_",
}
LIBRARY_ADAPTER = REPO / "domain" / "library.py"

# Tests live in the folder of the layer they test; reliability and the root test the whole.
TEST_LAYERS = {
    "domain", "store", "projections", "audit", "service", "api", "cli", "fixtures", "client", "formats",
    "witness", "web",
}


def sources(*rooms: str) -> Iterator[Path]:
    for room in rooms:
        yield from sorted((REPO / room).rglob("*.py"))


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported(module: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_each_room_imports_only_the_rooms_inside_it(room: str) -> None:
    outward = [
        f"{where(path, line)} imports {name}"
        for path in sources(room)
        for line, name in imported(tree(path))
        if (top := name.split(".")[0]) in ROOMS | {"tests"} and top != room and top not in MAY_IMPORT[room]
    ]
    assert not outward, f"{room}/ may import only {sorted(MAY_IMPORT[room])}:\n" + "\n".join(outward)


def test_the_domain_uses_no_driver_no_server_and_no_environment() -> None:
    impure = [
        f"{where(path, line)} imports {name}"
        for path in sources("domain")
        for line, name in imported(tree(path))
        if name.split(".")[0] in IMPURE
    ]
    assert not impure, "domain/ holds the rules alone; move this to store/ or an outer room:\n" + "\n".join(impure)


def test_the_librarys_private_names_are_used_in_one_adapter_module_only() -> None:
    used = []
    for path in sources(*ROOMS):
        if path == LIBRARY_ADAPTER:
            continue
        for node in ast.walk(tree(path)):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else None
            if isinstance(node, ast.ImportFrom):
                name = next((a.name for a in node.names if a.name in LIBRARY_INTERNALS), None)
            if name in LIBRARY_INTERNALS:
                used.append(f"{where(path, node.lineno)} uses {name}")
    assert not used, "go through domain/library.py, which says why and is tested:\n" + "\n".join(used)


def private_names_by_room() -> dict[str, set[str]]:
    """Each single-underscore name a room defines (functions, classes, attributes, globals)."""
    rooms: dict[str, set[str]] = {}
    for room in ROOMS:
        for path in sources(room):
            for node in ast.walk(tree(path)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = node.name
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    name = node.attr
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    name = node.id
                else:
                    continue
                if name.startswith("_") and not name.startswith("__"):
                    rooms.setdefault(room, set()).add(name)
    return rooms


def test_no_test_reaches_into_another_layers_private_names() -> None:
    private = private_names_by_room()
    reaching = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        layer = path.relative_to(REPO / "tests").parts[0]
        own = private.get(layer, set()) if layer in TEST_LAYERS else set()
        others = set().union(*(names for room, names in private.items() if room != layer)) - own
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                names = [node.attr]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOMS:
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "setattr" and len(node.args) > 1:
                names = [node.args[1].value] if isinstance(node.args[1], ast.Constant) else []
            else:
                continue
            reaching += [f"{where(path, node.lineno)}: {name}" for name in names if name in others]
    assert not reaching, "test a layer through its public names, or move the test to its layer:\n" + "\n".join(reaching)


OUTSIDE = re.compile(r"DESIGN(\.md)?\s*§|\bshared/|\.\./shared|NOTES-eventsourcing|STYLE\.md|seed/moscow")


def test_no_code_comment_or_doc_points_outside_the_repository() -> None:
    texts = [*sources(*ROOMS, "tests"), *sorted(REPO.glob("*.md")), *sorted((REPO / "docs").rglob("*.md")),
             REPO / "Makefile", REPO / "pyproject.toml"]
    pointing = [
        f"{where(path, number)}: {line.strip()}"
        for path in texts
        if path != Path(__file__)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert not pointing, "say it here instead of pointing at a file the repository does not have:\n" + "\n".join(pointing)
