"""What `Library` provides to its two halves (search.py and indexing.py are mixed into it): the library's
folder and notice function, its catalog, index store, model and query encoder, opened lazily.

The halves subclass `LibraryHost` only for type checkers; at run time they subclass `object`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog
    from indexer.model.clip import ClipModel, ModelSpec
    from indexer.vectors.index import VectorIndex
    from indexer.vectors.store import IndexStore
    from searchengine.query.encode import QueryEncoder


class LibraryHost(Protocol):
    folder: Path
    notice: Callable[[str], None]
    _catalog: "Catalog | None"
    _model: "ClipModel | None"
    _query: "QueryEncoder | None"
    _device: str

    @property
    def catalog_path(self) -> Path: ...
    def exists(self) -> bool: ...
    def _readable_catalog(self) -> "Catalog": ...
    def _writable_catalog(self) -> "Catalog": ...
    def _index_store(self, catalog: "Catalog") -> "IndexStore": ...
    def _readable_index(self) -> "VectorIndex": ...
    def _query_encoder(self) -> "QueryEncoder": ...
    def _spec(self, catalog: "Catalog") -> "ModelSpec": ...
    def _loaded_model(self) -> "ClipModel": ...
