"""`Library`: the Python API. A library is one folder holding the SQLite catalog and the derived vector index."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from indexer.catalog.store import Catalog
from indexer.errors import LibraryNotFoundError, SearchEngineError
from searchengine.library.indexing import LibraryIndexing, RepairSummary, precision_of
from searchengine.library.layout import (
    CATALOG_FILE,
    INDEX_FILE,
    LIBRARY_ENV,
    LOCK_FILE,
    TEXT_TOWER_DIR,
    TEXT_TOWER_SKIPPED,
    default_library_dir,
)
from searchengine.library.search import MISSING_LIMIT, LibrarySearch, SearchHit

if TYPE_CHECKING:
    from indexer.model.clip import ClipModel, ModelSpec
    from searchengine.query.expression import Term

__all__ = ["CATALOG_FILE", "INDEX_FILE", "LIBRARY_ENV", "LOCK_FILE", "MISSING_LIMIT",
           "TEXT_TOWER_DIR", "TEXT_TOWER_SKIPPED", "Library", "LibraryStatus", "RepairSummary", "SearchHit",
           "default_library_dir"]

NoticeFn = Callable[[str], None]


def _stderr_notice(message: str) -> None:
    print(f"searchengine: {message}", file=sys.stderr)


@dataclass
class LibraryStatus:
    library: str
    images: int  # photos
    videos: int
    segments: int  # the videos' moments, each searchable like a photo
    failed: int
    model: str
    pretrained: str
    dim: int
    index: str
    text_encoder: str
    image_precision: str
    text_encoder_note: str = ""
    device: str = "none"  # the device of the last index run that encoded images ("cpu", "cuda:0 (...)", "mps")
    compute_precision: str = "none"  # what that run computed embeddings in ("fp32", "fp16", "int8"...)
    ocr: str = "off"  # "on": index reads the text in pictures (--ocr), remembered
    texts_read: int = 0  # pictures read (photos, and the frames of video moments)
    texts_with_text: int = 0
    texts_failed: int = 0
    texts_pending: int = 0  # not read yet (the next `index` reads them while OCR is on)


class Library(LibraryIndexing, LibrarySearch):
    """Open one with `Library.open(folder)`; `index`, `search`, `status`, `embed`."""

    def __init__(self, folder: Path, notice: NoticeFn = _stderr_notice):
        self.folder = Path(folder).expanduser().absolute()
        self.notice = notice
        self._catalog: Catalog | None = None
        self._model: "ClipModel | None" = None
        self._store = None
        self._query = None
        self._device = "cpu"  # where a model loaded for a query runs; index and embed choose theirs

    @classmethod
    def open(cls, folder: Path | str | None = None, notice: NoticeFn = _stderr_notice) -> "Library":
        return cls(Path(folder) if folder else default_library_dir(), notice)

    @property
    def catalog_path(self) -> Path:
        return self.folder / CATALOG_FILE

    def exists(self) -> bool:
        return self.catalog_path.exists()

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None
        self._store = None

    # --- status and embeddings ------------------------------------------------------------------------------------
    def status(self) -> LibraryStatus:
        catalog = self._readable_catalog()
        meta = catalog.meta()
        photos, videos, segments = catalog.media_counts()
        failed = catalog.failed_count()
        tower_problem = self._text_tower_problem()
        from indexer.catalog.texts import OCR_KEY, text_counts

        words = text_counts(catalog)
        return LibraryStatus(str(self.folder), photos, videos, segments, failed, meta["model"], meta["pretrained"],
                             int(meta["dim"]),
                             meta.get("index_kind", "none"), "torch" if tower_problem else "numpy",
                             meta.get("image_precision", "fp32"), tower_problem or "", meta.get("device", "none"),
                             meta.get("compute_precision", "none"), meta.get(OCR_KEY, "off"), words.read,
                             words.with_text, words.failed, words.pending)

    def _text_tower_problem(self) -> str | None:
        """Why text queries go to torch (None: the numpy export is complete and gives its recorded probe)."""
        skipped = self.folder / TEXT_TOWER_SKIPPED
        if skipped.exists():
            return skipped.read_text().strip()
        from indexer.model.tower_manifest import export_reason

        return export_reason(self.folder / TEXT_TOWER_DIR)

    def failures(self) -> list[tuple[str, str]]:
        return [(os.fsdecode(f.path), f.reason) for f in self._readable_catalog().failures()]

    def embed(self, texts: Sequence[str] = (), images: Sequence[str] = (), model: str | None = None,
              pretrained: str | None = None, device: str | None = None) -> list[np.ndarray]:
        """Embeddings exactly as `index` and `search` compute them; without a library, of the given model.
        Images are encoded on `device` (default auto, as `index`); text on the CPU."""
        from indexer.model.device import check_device

        check_device(device)
        self._use_device(device or "auto")
        if self.exists():
            self._check_model(self._readable_catalog(), model, pretrained)
        elif self._model is None:
            from indexer.model.clip import ModelSpec, load_model

            self._model = load_model(ModelSpec.resolve(model, pretrained), device=self._device, notice=self.notice)
        encoder = self._query_encoder()
        out = list(encoder.texts(texts)) if texts else []
        return out + (list(encoder.image_files(images)) if images else [])

    def embed_terms(self, terms: "Sequence[Term]", model: str | None = None,
                    pretrained: str | None = None) -> np.ndarray:
        """The combined query vector of `terms`, every image encoded afresh as `embed` does."""
        self.embed((), (), model, pretrained)  # checks or loads the model
        return self.query_vector(terms, reuse_stored=False)

    # --- plumbing ------------------------------------------------------------------------------------------------
    def _spec(self, catalog: Catalog) -> "ModelSpec":
        from indexer.model.clip import ModelSpec

        meta = catalog.meta()
        return ModelSpec(meta["model"], meta["pretrained"])

    def _loaded_model(self) -> "ClipModel":
        """The library's model on this Library's device, refused if its weights or preprocessing changed."""
        if self._model is None:
            from indexer.model.clip import load_model
            from indexer.model.identity import check_preprocess, verify_weights

            catalog = self._readable_catalog()
            spec, meta = self._spec(catalog), catalog.meta()
            updates = verify_weights(meta, spec, str(self.folder))
            model = load_model(spec, precision_of(catalog), self._device, self.notice)
            check_preprocess(meta, spec, model.preprocess_cfg, str(self.folder))
            if updates and catalog.writable:  # same bytes, new stat (copied, touched): no need to hash next time
                catalog.set_meta(updates)
            self._model = model
        return self._model

    def _writable_catalog(self) -> Catalog:
        if self._catalog is None or not self._catalog.writable:
            self.close()
            self._catalog = Catalog.open(self.catalog_path, writable=True)
        return self._catalog

    def _readable_catalog(self) -> Catalog:
        if self._catalog is None:
            if not self.exists():
                raise LibraryNotFoundError(
                    f"no library at {self.folder}; create one with `searchengine index FOLDER` "
                    f"(or choose one with --library / ${LIBRARY_ENV})")
            self._catalog = Catalog.open(self.catalog_path, writable=False)
        return self._catalog

    def _index_store(self, catalog: Catalog):
        from indexer.vectors.store import IndexStore

        if self._store is None or self._store.catalog is not catalog:
            self._store = IndexStore(catalog, self.folder / INDEX_FILE, int(catalog.meta()["dim"]), self.notice,
                                     writer_active=lambda: not catalog.writable and self._writer_active())
        return self._store

    def _readable_index(self):
        """The index as of the latest commit, or None (answer exactly). A reader that rebuilt or caught up a
        small flat index saves it for the next reader when no writer runs; larger ones are left to writers."""
        from indexer.vectors.index import FLAT

        store = self._index_store(self._readable_catalog())
        before = store.index.seq if store.index is not None else None
        index = store.for_query()
        if index is not None and index.kind == FLAT and index.seq not in (before, store.saved_seq):
            self._save_if_no_writer(store)
        return index

    def _writer_active(self) -> bool:
        from indexer.lock import try_writer_lock

        lock = try_writer_lock(self.folder / LOCK_FILE)
        if lock is None:
            return True
        lock.release()
        return False

    def _save_if_no_writer(self, store) -> None:
        """A reader repairs the index file for the next reader, unless an index run owns it."""
        from indexer.lock import try_writer_lock

        lock = try_writer_lock(self.folder / LOCK_FILE)
        if lock is None:
            return
        try:
            store.save()
        except (OSError, SearchEngineError):
            pass  # a read-only library folder: searching still works from memory
        finally:
            lock.release()

    def _query_encoder(self):
        from searchengine.query.encode import QueryEncoder

        if self._query is None:
            expected = self.exists() and not (self.folder / TEXT_TOWER_SKIPPED).exists()
            self._query = QueryEncoder(self.folder / TEXT_TOWER_DIR if expected else None, self._loaded_model,
                                       self.notice)
        return self._query
