"""The upper floor of searchengine: everything that answers. Subpackages (each imports only those below it):

    cli/       the `searchengine` command (click): parse, call the API, format
    server/    `searchengine serve`: the FastAPI app and its page
    library/   the Python API, `Library`
    query/     what turns a question into ranked hits: terms, filters, ranking, cutoff, duplicates

The public Python API is importable from here::

    from searchengine import Library, SearchFilters, Term, parse_expression

Names are loaded on first use, so `import searchengine` costs nothing a command does not need.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_PUBLIC = {
    "Library": "searchengine.library.api",
    "LibraryStatus": "searchengine.library.api",
    "SearchHit": "searchengine.library.search",
    "RepairSummary": "searchengine.library.indexing",
    "SearchFilters": "searchengine.query.filters",
    "Term": "searchengine.query.expression",
    "parse_expression": "searchengine.query.expression",
    "SearchEngineError": "indexer.errors",
}
__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    from indexer.errors import SearchEngineError
    from searchengine.library.api import Library, LibraryStatus
    from searchengine.library.indexing import RepairSummary
    from searchengine.library.search import SearchHit
    from searchengine.query.expression import Term, parse_expression
    from searchengine.query.filters import SearchFilters


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'searchengine' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
