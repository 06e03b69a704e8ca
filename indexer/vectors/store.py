"""Keeps the derived vector index in step with the catalog: load, check, catch up, rebuild, save.

The index file's header carries the catalog seq it reflects; the catalog's meta `index_seq` records the last
saved one. Who may do what:
* a reader (a query) loads the file and catches it up in memory (adds and removals, never training). It trusts a
  file that still has the signature its writer recorded in the catalog (no checksum of the whole file). A file
  that is missing, damaged or inconsistent is rebuilt only while the library is small enough for the exact
  flat kind (no training, well under a second); above that the query is answered by exact search over the
  catalog, with a notice saying how to repair.
* a writer (an index run) catches up as it commits and saves now and then; a file it could not use, and any
  retraining the collection's growth calls for, wait for `finish` at the end of the run, or for `repair`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from indexer.catalog.store import Catalog, Changes
from indexer.errors import IndexFileError
from indexer.vectors.file import signature_of
from indexer.vectors.index import ONDISK_THRESHOLD, VectorIndex, flat_is_cheap

NoticeFn = Callable[[str], None]
# Catalog meta: the index file's signature as its writer left it (file.signature_of), so readers need not checksum
# the whole file on every load.
FILE_SIGNATURE = "index_file_signature"
REPAIR_HINT = "run `searchengine repair` (or the next `searchengine index`) to rebuild it"


class IndexStore:
    def __init__(self, catalog: Catalog, path: Path, dim: int, notice: NoticeFn,
                 writer_active: Callable[[], bool] = lambda: False):
        self.catalog = catalog
        self.writer_active = writer_active  # an index run saves its index as it goes: being behind is normal
        self.path = Path(path)
        self.dim = dim
        self.notice = notice
        self.index: VectorIndex | None = None
        self.unusable = False  # the file cannot serve and rebuilding it is a writer's job
        self.saved_seq = -1
        self.last_save = time.monotonic()

    # --- readers --------------------------------------------------------------------------------------------
    def for_query(self) -> VectorIndex | None:
        """The index as of the catalog's latest commit, or None: answer by exact search over the catalog."""
        if self.unusable:
            return None
        if self.index is None:
            self.index = self._load() or self._rebuild_if_cheap()
        if self.index is not None and not self._catch_up():
            self.index = self._rebuild_if_cheap()
        return self.index

    def _rebuild_if_cheap(self) -> VectorIndex | None:
        if flat_is_cheap(self.catalog.image_count()):
            self._tell("rebuilding it from the catalog")
            return self._build()
        self.unusable = True
        self.notice(f"{self.problem}; answering by exact search over the catalog (slower) until it is rebuilt: "
                    f"{REPAIR_HINT}")
        return None

    # --- writers --------------------------------------------------------------------------------------------
    def start_run(self) -> None:
        """Before an index run: load and catch up; a file that cannot be used waits for `finish` if large."""
        self.index = self._load()
        if self.index is not None and self._catch_up():
            return
        if flat_is_cheap(self.catalog.image_count()):
            self._tell("rebuilding it from the catalog")
            self.index = self._build()
        else:
            self._tell("it will be rebuilt at the end of this run")
            self.index = None

    def save_every(self, seconds: float) -> None:
        """During a run: catch up and save now and then; never retrain here (that would stall encoding)."""
        if self.index is not None and time.monotonic() - self.last_save >= seconds:
            if self._catch_up():
                self._save()

    def finish(self) -> None:
        """End of an index run: rebuild what could not be used, retrain when the collection outgrew the index."""
        if self.index is None or not self._catch_up() or self.index.should_rebuild(self.catalog.image_count()):
            self.index = self._build()
        self._save()

    def repair(self) -> VectorIndex:
        """Rebuild from the catalog (training the ANN kind as its size calls for) and save."""
        self.index = self._build()
        self._save()
        return self.index

    def save(self) -> None:
        """Catch up and write the file (a reader's cheap repair, or a writer's)."""
        if self.index is not None and self._catch_up():
            self._save()

    # --- plumbing -------------------------------------------------------------------------------------------
    def _tell(self, action: str) -> None:
        if self.problem:  # empty for a new library's first index: nothing went wrong
            self.notice(f"{self.problem}; {action}")

    def _load(self) -> VectorIndex | None:
        meta = self.catalog.meta()
        recorded = meta.get("index_seq")
        try:
            # Readers trust the file its writer recorded; writers verify it whole before building on it.
            index = VectorIndex.load(self.path, trusted=None if self.catalog.writable else meta.get(FILE_SIGNATURE))
        except IndexFileError as exc:
            self.problem = str(exc)
            if recorded is None and not self.path.exists():
                self.problem = ""  # a new library's first index: nothing to report
            return None
        catalog_seq = self.catalog.seq()
        if index.dim != self.dim or index.seq > catalog_seq:
            self.problem = f"vector index {self.path} does not match the catalog"
            return None
        self.saved_seq = index.seq
        if self.catalog.writable and meta.get(FILE_SIGNATURE) != index.signature:
            self.catalog.set_meta({FILE_SIGNATURE: index.signature})  # the file verified whole just now
        if index.seq < catalog_seq and not self.writer_active():
            self.notice(f"vector index {self.path} is behind the catalog (state {index.seq} < {catalog_seq}); "
                        "catching up from the catalog")
        return index

    def _catch_up(self) -> bool:
        """Apply the catalog's changes since the index's seq; False when the result disagrees with the catalog."""
        index = self.index
        changes = self.catalog.changes(self.dim, since_seq=index.seq)
        if changes.seq != index.seq:
            _apply(index, changes)
        if index.ntotal != changes.total:
            self.problem = (f"vector index {self.path} holds {index.ntotal} vectors, the catalog {changes.total}")
            return False
        return True

    def _build(self) -> VectorIndex:
        if self.catalog.image_count() > ONDISK_THRESHOLD:
            return self._build_on_disk()
        changes = self.catalog.changes(self.dim)
        return VectorIndex.build(self.dim, changes.ids, changes.vectors, seq=changes.seq)

    def _build_on_disk(self) -> VectorIndex:
        """Larger than RAM: the embeddings go to a memory-mapped scratch file a chunk at a time, never all in memory."""
        from indexer.vectors.layered import snapshot_to_file

        scratch = self.path.with_name(f".{self.path.name}.build.npy")
        try:
            seq, ids, vectors = snapshot_to_file(self.catalog, self.dim, scratch)
            return VectorIndex.build(self.dim, ids, vectors, seq=seq, folder=self.path.parent)
        finally:
            scratch.unlink(missing_ok=True)

    def _save(self) -> None:
        """Write atomically, then record the seq in the catalog. Callers hold the library's writer lock, so any
        temporary index file lying about is a dead run's."""
        _remove_dead_temp_files(self.path)
        index = self.index
        if index.seq == self.saved_seq and self.path.exists():
            return
        index.save(self.path)
        self.saved_seq = index.seq
        self.last_save = time.monotonic()
        if self.catalog.writable:
            self.catalog.set_meta({"index_seq": str(index.seq), "index_kind": index.kind,
                                   FILE_SIGNATURE: signature_of(self.path)})

    problem = ""


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
