"""Keeps the derived vector index in step with the catalog: load, check, catch up or rebuild, save.

The index file's header carries the catalog seq it reflects; the catalog's meta `index_seq` records the last
saved one. A file that is missing, damaged, from another catalog or behind is repaired from the catalog.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from indexer.catalog import Catalog, Changes
from indexer.errors import IndexFileError
from indexer.vector_index import VectorIndex

NoticeFn = Callable[[str], None]


class IndexStore:
    def __init__(self, catalog: Catalog, path: Path, dim: int, notice: NoticeFn,
                 writer_active: Callable[[], bool] = lambda: False):
        self.catalog = catalog
        self.writer_active = writer_active  # an index run saves its index as it goes: being behind is normal
        self.path = Path(path)
        self.dim = dim
        self.notice = notice
        self.index: VectorIndex | None = None
        self.saved_seq = -1
        self.last_save = time.monotonic()

    def current(self) -> VectorIndex:
        """The index as of the catalog's latest committed state."""
        if self.index is None:
            self.index = self._load()
        self._catch_up()
        return self.index

    def save(self) -> None:
        """Bring the index up to date and write it atomically, then record its seq in the catalog.

        Callers hold the library's writer lock, so any temporary index file lying about is a dead run's.
        """
        _remove_dead_temp_files(self.path)
        index = self.current()
        if index.seq == self.saved_seq and self.path.exists():
            return
        index.save(self.path)
        self.saved_seq = index.seq
        self.last_save = time.monotonic()
        if self.catalog.writable:
            self.catalog.set_meta({"index_seq": str(index.seq), "index_kind": index.kind})

    def save_every(self, seconds: float) -> None:
        if time.monotonic() - self.last_save >= seconds:
            self.save()

    def _load(self) -> VectorIndex:
        recorded = self.catalog.meta().get("index_seq")
        try:
            index = VectorIndex.load(self.path)
        except IndexFileError as exc:
            if recorded is not None or self.path.exists():
                self.notice(f"{exc}; rebuilding it from the catalog")
            return self._build()
        catalog_seq = self.catalog.seq()
        if index.dim != self.dim or index.seq > catalog_seq:
            self.notice(f"vector index {self.path} does not match the catalog; rebuilding it from the catalog")
            return self._build()
        self.saved_seq = index.seq
        if index.seq < catalog_seq and not self.writer_active():
            self.notice(f"vector index {self.path} is behind the catalog (state {index.seq} < {catalog_seq}); "
                        "catching up from the catalog")
        return index

    def _build(self) -> VectorIndex:
        changes = self.catalog.changes(self.dim)
        return VectorIndex.build(self.dim, changes.ids, changes.vectors, seq=changes.seq)

    def _catch_up(self) -> None:
        index = self.index
        changes = self.catalog.changes(self.dim, since_seq=index.seq)
        if changes.seq != index.seq:
            _apply(index, changes)
        if index.ntotal != changes.total:
            self.notice(f"vector index {self.path} holds {index.ntotal} vectors, the catalog {changes.total}; "
                        "rebuilding it from the catalog")
            self.index = self._build()
        elif self.catalog.writable and index.should_rebuild(changes.total):
            # Only a writer retrains (minutes at a million vectors); a reader's caught-up index is correct as is.
            self.index = self._build()


def _remove_dead_temp_files(path: Path) -> None:
    """Temporary files VectorIndex.save left behind when its process was killed before the rename."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def _apply(index: VectorIndex, changes: Changes) -> None:
    if len(changes.removed_ids):
        index.remove(changes.removed_ids)
    if len(changes.ids):
        index.remove(changes.ids)  # updated rows: drop the old vector before adding the new one
        index.add(changes.ids, changes.vectors)
    index.seq = changes.seq
