"""`Library`: the Python API. A library is one folder holding the SQLite catalog and the derived vector index."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from indexer.catalog import Catalog
from indexer.catalog_images import (ImageRow, IndexRoot, embedding_of, image_row, image_rows, index_roots,
                                    remember_roots)
from indexer.errors import (ImageNotFoundError, LibraryNotFoundError, ModelMismatchError, QueryError,
                            SearchEngineError)
from indexer.scan import absolute
from indexer.catalog_metadata import metadata_for, newest, record
from indexer.metadata import ImageMetadata
from searchengine.details import ImageDetails, camera_text, taken_at_text
from searchengine.filtered import filtered_search
from searchengine.filters import SearchFilters

if TYPE_CHECKING:
    from indexer.model import ClipModel, ModelSpec
    from indexer.pipeline import IndexOptions, IndexSummary, Reporter

# Imports of the indexing side (torch wrapper, PIL, filelock, workers) stay inside the methods that need
# them: a cold query pays only for what answering costs.

CATALOG_FILE = "catalog.sqlite"
INDEX_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
TEXT_TOWER_DIR = "text_tower"
INDEX_SAVE_SECONDS = 60.0
LIBRARY_ENV = "SEARCHENGINE_LIBRARY"
HITS_PER_READ = 10_000

NoticeFn = Callable[[str], None]


def default_library_dir() -> Path:
    """$SEARCHENGINE_LIBRARY, else the per-user data folder."""
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "searchengine"


def _stderr_notice(message: str) -> None:
    print(f"searchengine: {message}", file=sys.stderr)


@dataclass
class SearchHit:
    """One result; `score` is None for a filter-only search (newest first). Metadata fields: None when unknown."""

    path: str
    score: float | None
    id: int
    taken_at: str | None = None
    width: int | None = None
    height: int | None = None
    camera: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass
class LibraryStatus:
    library: str
    images: int
    failed: int
    model: str
    pretrained: str
    dim: int
    index: str
    text_encoder: str
    image_precision: str


class Library:
    """Open one with `Library.open(folder)`; `index`, `search`, `status`, `embed`."""

    def __init__(self, folder: Path, notice: NoticeFn = _stderr_notice):
        self.folder = Path(folder).expanduser().absolute()
        self.notice = notice
        self._catalog: Catalog | None = None
        self._model: "ClipModel | None" = None
        self._store = None
        self._query = None

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

    # --- indexing ---------------------------------------------------------------------------------------------
    def index(self, paths: Sequence[str], model: str | None = None, pretrained: str | None = None,
              options: "IndexOptions | None" = None, exclude: Sequence[str] = (),
              reporter: "Reporter | None" = None, image_precision: str | None = None) -> "IndexSummary":
        """Index image files under `paths`. `image_precision` ("fp32", or opt-in "int8") is fixed at creation."""
        from indexer.lock import writer_lock
        from indexer.metadata_fill import fill_missing_metadata
        from indexer.model import ModelSpec
        from indexer.pipeline import IndexOptions, run_pipeline
        from indexer.plan import make_plan

        reporter = reporter or _Quiet()
        roots = [absolute(p) for p in paths]
        for root, given in zip(roots, paths):
            if not os.path.exists(root):
                raise SearchEngineError(f"no such file or folder: {given}")
        if not self.exists():
            self._create(ModelSpec.resolve(model, pretrained), image_precision or "fp32")
        self.folder.mkdir(parents=True, exist_ok=True)
        with writer_lock(self.folder / LOCK_FILE, self.notice):
            catalog = self._writable_catalog()
            self._check_model(catalog, model, pretrained)
            self._check_precision(catalog, image_precision)
            store = self._index_store(catalog)
            store.current()  # repair a damaged or stale index before adding to it
            plan = make_plan(catalog, roots, exclude, reporter.skipped)
            try:
                summary = run_pipeline(catalog, plan, self._loaded_model, options or IndexOptions(),
                                       reporter, lambda: store.save_every(INDEX_SAVE_SECONDS))
            finally:
                plan.close()
            summary.metadata_filled = fill_missing_metadata(catalog, roots)
            store.save()
            self._export_text_tower_if_missing()
            remember_roots(catalog, roots, list(exclude))
        return summary

    def remembered_roots(self) -> list[IndexRoot]:
        """The folders (with their excludes) earlier `index` runs were given."""
        return index_roots(self._readable_catalog())

    def reindex(self, options: "IndexOptions | None" = None, reporter: "Reporter | None" = None) -> "IndexSummary":
        """`index` again over every remembered root, each with the excludes it was last given."""
        from indexer.pipeline import IndexSummary

        groups: dict[tuple[str, ...], list[bytes]] = {}
        for item in self.remembered_roots():
            if os.path.exists(item.root):
                groups.setdefault(tuple(item.exclude), []).append(item.root)
        if not groups:
            raise SearchEngineError(f"library {self.folder} remembers no folder that still exists; "
                                    "give the folders to index")
        total = IndexSummary()
        for exclude, roots in groups.items():
            summary = self.index([os.fsdecode(r) for r in roots], options=options, exclude=exclude,
                                 reporter=reporter)
            for name in ("added", "updated", "removed", "unchanged", "failed", "reused", "encoded", "seconds"):
                setattr(total, name, getattr(total, name) + getattr(summary, name))
        return total

    def _create(self, spec: "ModelSpec", image_precision: str) -> None:
        """Load the model first: weights that cannot be had leave no half-made library behind."""
        from indexer.lock import writer_lock
        from indexer.model import load_model

        model = load_model(spec, image_precision)
        self.folder.mkdir(parents=True, exist_ok=True)
        with writer_lock(self.folder / LOCK_FILE, self.notice):
            if self.exists():
                return  # another process created it meanwhile; the model check follows under the lock
            catalog = Catalog.create(self.catalog_path,
                                     {"model": spec.name, "pretrained": spec.pretrained, "dim": str(model.dim),
                                      "image_precision": image_precision})
            self._catalog, self._model = catalog, model

    def _check_model(self, catalog: Catalog, name: str | None, pretrained: str | None) -> None:
        if name is None and pretrained is None:
            return
        from indexer.model import ModelSpec, normalise_pretrained

        mine = self._spec(catalog)
        asked = ModelSpec(ModelSpec.resolve(name, None).name if name else mine.name,
                          mine.pretrained if pretrained is None else normalise_pretrained(pretrained))
        if asked != mine:
            raise ModelMismatchError(
                f"library {self.folder} uses model {mine.describe()}, not {asked.describe()}; "
                "use another --library for another model")

    def _check_precision(self, catalog: Catalog, asked: str | None) -> None:
        mine = _precision(catalog)
        if asked is not None and asked != mine:
            raise ModelMismatchError(f"library {self.folder} encodes images in {mine}, not {asked}; "
                                     "the image precision is chosen when a library is created")

    def _export_text_tower_if_missing(self) -> None:
        target = self.folder / TEXT_TOWER_DIR
        if target.exists() or self._model is None:
            return
        from indexer.text_tower import export_text_tower

        export_text_tower(self._model.model, self._model.tokenizer, target)

    # --- searching --------------------------------------------------------------------------------------------
    def search(self, text: str | None = None, image: str | None = None, limit: int = 20,
               exact: bool = False, filters: SearchFilters | None = None, offset: int = 0) -> list[SearchHit]:
        """Best matches for a text or an image among the images passing `filters`; filters alone: newest first.

        `offset` skips that many of the best (a page: the same order as a longer limit).
        """
        if text is not None and image is not None or (text is None and image is None and not filters):
            raise QueryError("give either a text or an image to search for (or filters alone)")
        if limit < 1:
            raise QueryError("--limit must be at least 1")
        catalog = self._readable_catalog()
        if catalog.image_count() == 0:
            raise QueryError(f"library {self.folder} has no images yet; run `searchengine index FOLDER` first")
        if text is None and image is None:
            found = newest(catalog, *filters.sql(catalog), limit + offset)[offset:]
            return self._hits(catalog, [(None, i) for i in found])
        query = self._query_encoder().texts([text]) if text is not None else \
            self._query_encoder().image_file(image, catalog)
        return self.search_vector(query[0], limit + offset, exact, filters)[offset:]

    def similar(self, image_id: int, limit: int = 20, offset: int = 0, exact: bool = False,
                filters: SearchFilters | None = None) -> list[SearchHit]:
        """Images like the indexed image `image_id`, from its stored embedding ("more like this")."""
        vector = embedding_of(self._readable_catalog(), image_id)
        if vector is None:
            raise ImageNotFoundError(f"no image with id {image_id} in the library")
        return self.search_vector(vector, limit + offset, exact, filters)[offset:]

    def image_vector(self, data: bytes) -> np.ndarray:
        """The query vector of an image's bytes: the stored embedding for known content, else encoded."""
        return self._query_encoder().image_bytes(data, self._readable_catalog())[0]

    def text_vector(self, text: str) -> np.ndarray:
        return self._query_encoder().texts([text])[0]

    def image(self, image_id: int) -> ImageRow | None:
        """The catalog's record of one image (path, size, mtime, hash, indexed-at and any metadata columns)."""
        return image_row(self._readable_catalog(), image_id)

    def images(self, ids: list[int]) -> dict[int, ImageRow]:
        """Records of several images at once, by id (ids no longer indexed are left out)."""
        return image_rows(self._readable_catalog(), ids)

    def search_vector(self, vector: np.ndarray, limit: int = 20, exact: bool = False,
                      filters: SearchFilters | None = None) -> list[SearchHit]:
        catalog = self._readable_catalog()
        dim = int(catalog.meta()["dim"])
        query = np.asarray(vector, dtype=np.float32).reshape(1, dim)
        if filters:
            scores, ids = filtered_search(catalog, self._readable_index, query[0], limit, filters, dim, exact)
            scores, ids = scores[None, :], ids[None, :]
        elif exact:
            scores, ids = _exact_search(catalog, query, dim, limit)
        else:
            index = self._readable_index()
            scores, ids = index.search(query, limit, rerank=lambda wanted: catalog.vectors_for(wanted, dim))
        return self._hits(catalog, [(float(s), int(i)) for s, i in zip(scores[0], ids[0]) if i >= 0])[:limit]

    def _hits(self, catalog: Catalog, ranked: list[tuple[float | None, int]]) -> list[SearchHit]:
        """Hits for (score, id) pairs, with their metadata, leaving out ids no longer in the catalog."""
        ids = [i for _, i in ranked]
        paths: dict[int, bytes] = {}
        for start in range(0, len(ids), HITS_PER_READ):  # SQLite caps the parameters of one statement
            paths.update(catalog.paths_for(ids[start:start + HITS_PER_READ]))
        metadata = metadata_for(catalog, ids)
        hits = []
        for score, image_id in ranked:
            if image_id in paths:
                meta = metadata.get(image_id) or ImageMetadata()
                hits.append(SearchHit(os.fsdecode(paths[image_id]), score, image_id, taken_at_text(meta), meta.width,
                                      meta.height, camera_text(meta), meta.latitude, meta.longitude))
        return hits

    def show(self, path_or_id: str | int) -> ImageDetails:
        """One image's record, by path (as indexed) or by id."""
        catalog = self._readable_catalog()
        rec = None
        if isinstance(path_or_id, str):
            rec = record(catalog, path=absolute(path_or_id))
        if rec is None and str(path_or_id).strip().isdigit():
            rec = record(catalog, image_id=int(path_or_id))
        if rec is None:
            raise QueryError(f"{path_or_id} is not in library {self.folder} (neither an indexed path nor an image id)")
        return ImageDetails.from_record(rec)

    # --- status and embeddings ------------------------------------------------------------------------------------
    def status(self) -> LibraryStatus:
        catalog = self._readable_catalog()
        meta = catalog.meta()
        images, failed = catalog.counts()
        has_tower = (self.folder / TEXT_TOWER_DIR).is_dir()
        return LibraryStatus(str(self.folder), images, failed, meta["model"], meta["pretrained"], int(meta["dim"]),
                             meta.get("index_kind", "none"), "numpy" if has_tower else "torch",
                             meta.get("image_precision", "fp32"))

    def failures(self) -> list[tuple[str, str]]:
        return [(os.fsdecode(f.path), f.reason) for f in self._readable_catalog().failures()]

    def embed(self, texts: Sequence[str] = (), images: Sequence[str] = (), model: str | None = None,
              pretrained: str | None = None) -> list[np.ndarray]:
        """Embeddings exactly as `index` and `search` compute them; without a library, of the given model."""
        if self.exists():
            self._check_model(self._readable_catalog(), model, pretrained)
        elif self._model is None:
            from indexer.model import ModelSpec, load_model

            self._model = load_model(ModelSpec.resolve(model, pretrained))
        encoder = self._query_encoder()
        out = list(encoder.texts(texts)) if texts else []
        return out + (list(encoder.image_files(images)) if images else [])

    # --- plumbing ------------------------------------------------------------------------------------------------
    def _spec(self, catalog: Catalog) -> "ModelSpec":
        from indexer.model import ModelSpec

        meta = catalog.meta()
        return ModelSpec(meta["model"], meta["pretrained"])

    def _loaded_model(self) -> "ClipModel":
        if self._model is None:
            from indexer.model import load_model

            catalog = self._readable_catalog()
            self._model = load_model(self._spec(catalog), _precision(catalog))
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
        from indexer.index_store import IndexStore

        if self._store is None or self._store.catalog is not catalog:
            self._store = IndexStore(catalog, self.folder / INDEX_FILE, int(catalog.meta()["dim"]), self.notice,
                                     writer_active=lambda: not catalog.writable and self._writer_active())
        return self._store

    def _readable_index(self):
        """The index as of the latest commit; a reader that had to repair it saves it when no writer runs."""
        store = self._index_store(self._readable_catalog())
        before = store.index.seq if store.index is not None else None
        index = store.current()
        if index.seq != before and index.seq != store.saved_seq:
            self._save_if_no_writer(store)
            index = store.index  # save() brought it up to date (or, refused, left it as it was)
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
        from searchengine.query import QueryEncoder

        if self._query is None:
            tower = self.folder / TEXT_TOWER_DIR
            self._query = QueryEncoder(tower if tower.is_dir() else None, self._loaded_model)
        return self._query


def _precision(catalog: Catalog) -> str:
    return catalog.meta().get("image_precision", "fp32")


class _Quiet:
    def start(self, total: int) -> None: ...
    def skipped(self, path: bytes, reason: str) -> None: ...
    def advance(self, n: int) -> None: ...


def _exact_search(catalog: Catalog, query: np.ndarray, dim: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over every stored embedding: the reference any index is measured against."""
    changes = catalog.changes(dim)
    scores = changes.vectors @ query[0]
    top = np.argsort(-scores, kind="stable")[:limit]
    return scores[top][None, :], changes.ids[top][None, :]
