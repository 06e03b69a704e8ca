"""The house's import rules, read from the source (every import, including those inside functions and under
TYPE_CHECKING): `indexer` never imports `searchengine`; each subpackage imports only the rooms it is allowed;
no circle between modules or between subpackages."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("indexer", "searchengine")

# room -> the rooms it may import (besides itself). A room is a subpackage, or a root module's own name.
# The root helpers, and the `indexer` package itself (its __init__ is a docstring: `from indexer import cpu`
# runs it, as any import of a submodule does).
BASE = {"indexer", "indexer.errors", "indexer.durable", "indexer.cpu", "indexer.lock"}
ALLOWED = {
    "indexer": set(), "indexer.errors": set(), "indexer.durable": set(), "indexer.cpu": set(), "indexer.lock": set(),
    "indexer.images": BASE,
    "indexer.catalog": BASE | {"indexer.images", "indexer.video", "indexer.ocr"},
    "indexer.model": BASE | {"indexer.images"},
    "indexer.video": BASE | {"indexer.images"},
    "indexer.ocr": BASE | {"indexer.images"},
    "indexer.vectors": BASE | {"indexer.catalog"},
    "indexer.pipeline": BASE | {"indexer.images", "indexer.video", "indexer.catalog", "indexer.model", "indexer.ocr"},
    "indexer.exchange": BASE | {"indexer.images", "indexer.catalog", "indexer.model"},
    "indexer.ray": BASE | {"indexer.images", "indexer.video", "indexer.catalog", "indexer.model", "indexer.pipeline"},
    "indexer.index_run": BASE | {"indexer.images", "indexer.video", "indexer.catalog", "indexer.model", "indexer.vectors",
                                 "indexer.pipeline", "indexer.exchange", "indexer.ray", "indexer.ocr"},
}
INDEXER = set(ALLOWED)
ALLOWED |= {
    "searchengine.query": INDEXER,
    "searchengine.library": INDEXER | {"searchengine.query"},
    "searchengine.server": INDEXER | {"searchengine.query", "searchengine.library"},
    "searchengine.cli": INDEXER | {"searchengine.query", "searchengine.library", "searchengine.server"},
    "searchengine": INDEXER | {"searchengine.query", "searchengine.library"},  # __init__ and __main__
}
ALLOWED["searchengine"] |= {"searchengine.cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports (`from a.b import c` counts a.b.c when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known}


def room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "searchengine" and (len(parts) == 1 or parts[1] in ("__main__",)):
        return "searchengine"
    return ".".join(parts[:2])


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imports_of(path, known) for name, path in modules().items()}


def test_every_room_is_known(graph):
    assert {room(m) for m in graph} <= set(ALLOWED), "a new subpackage needs its rules in ALLOWED"


def test_imports_run_downward_only(graph):
    wrong = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                   if room(d) != room(m) and room(d) not in ALLOWED[room(m)])
    assert not wrong, "\n".join(wrong)


def test_indexer_never_imports_searchengine(graph):
    assert not [m for m, deps in graph.items() if m.startswith("indexer") and
                any(d.startswith("searchengine") for d in deps)]


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def _is_package_init(graph, parent: str, child: str) -> bool:
    return child.startswith(parent + ".")  # a package's __init__ naming its own modules is not a cycle


def test_no_circle_between_modules(graph):
    edges = {m: {d for d in deps if not _is_package_init(graph, m, d)} for m, deps in graph.items()}
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


def test_no_circle_between_rooms(graph):
    edges: dict[str, set[str]] = defaultdict(set)
    for m, deps in graph.items():
        edges[room(m)] |= {room(d) for d in deps if room(d) != room(m)}
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rules are not vacuous: an upward import in a lower room is reported."""
    bad = {"indexer.catalog.x": {"indexer.pipeline.plan"}}
    assert [1 for m, deps in bad.items() for d in deps if room(d) not in ALLOWED[room(m)]]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
