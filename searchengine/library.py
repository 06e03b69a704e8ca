"""`Library`: the Python API. A library is one folder holding the SQLite catalog and the derived vector index."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from indexer.catalog import Catalog
from indexer.catalog_metadata import metadata_for, newest, record
from indexer.catalog_images import (ImageRow, IndexRoot, embedding_of, image_row, image_rows, index_roots,
                                    remember_roots)
from indexer.errors import (ImageNotFoundError, LibraryNotFoundError, ModelMismatchError, QueryError,
                            SearchEngineError)
from indexer.scan import absolute
from searchengine.details import ImageDetails, camera_text, taken_at_text
from searchengine.filtered import filtered_search
from searchengine.filters import SearchFilters
from searchengine.ranking import rank

if TYPE_CHECKING:
    from indexer.export import ExportSummary
    from indexer.importer import ImportSummary
    from indexer.model import ClipModel, ModelSpec
    from indexer.pipeline import IndexOptions, IndexSummary, Reporter
    from searchengine.duplicates import DuplicateGroup
    from searchengine.expression import Term

# Imports of the indexing side (torch wrapper, PIL, filelock, workers) stay inside the methods that need
# them: a cold query pays only for what answering costs.

CATALOG_FILE = "catalog.sqlite"
INDEX_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
TEXT_TOWER_DIR = "text_tower"
TEXT_TOWER_SKIPPED = "text_tower.skipped"  # why this library's model has no numpy export (queries use torch)
INDEX_SAVE_SECONDS = 60.0
LIBRARY_ENV = "SEARCHENGINE_LIBRARY"
# A search that has passed over this many vanished files stops looking further down the ranking (a whole
# drive unmounted would otherwise cost a stat of every file per query) and answers with what it found.
MISSING_LIMIT = 10_000

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
class RepairSummary:
    library: str
    images: int
    index: str
    seconds: float


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
    text_encoder_note: str = ""
    device: str = "none"  # the device of the last index run that encoded images ("cpu", "cuda:0 (...)", "mps")
    compute_precision: str = "none"  # what that run computed embeddings in ("fp32", "fp16", "int8"...)


class Library:
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

    # --- indexing ---------------------------------------------------------------------------------------------
    def index(self, paths: Sequence[str], model: str | None = None, pretrained: str | None = None,
              options: "IndexOptions | None" = None, exclude: Sequence[str] = (),
              reporter: "Reporter | None" = None, image_precision: str | None = None,
              ray: str | None = None, device: str | None = None) -> "IndexSummary":
        """Index image files under `paths`. `image_precision` ("fp32", or opt-in "int8") is fixed at creation.
        `ray`: run the work on Ray, "auto" (a local instance) or a cluster address (needs the ray extra).
        `device` (auto, cpu, cuda, cuda:N, mps; default auto) runs the image tower."""
        from indexer.catalog_run import record_run, verify_weights_for_run
        from indexer.device import check_device
        from indexer.lock import writer_lock
        from indexer.metadata_fill import fill_missing_metadata
        from indexer.model import ModelSpec
        from indexer.pipeline import IndexOptions, commit_removals, run_pipeline
        from indexer.plan import make_plan

        started = time.monotonic()
        reporter = reporter or _Quiet()
        run = run_pipeline if ray is None else _ray_pipeline(ray)
        roots = [absolute(p) for p in paths]
        for root, given in zip(roots, paths):
            if not os.path.exists(root):
                raise SearchEngineError(f"no such file or folder: {given}")
        options = options or IndexOptions()
        if ray is not None and device not in (None, "auto", "cpu"):
            raise SearchEngineError(f"--device {device} with --ray: each Ray encoder actor uses its own worker's "
                                    "best device (a GPU where the cluster has them); leave out --device")
        check_device(device, cpu_only=image_precision == "int8")  # an absent GPU: fail before anything is written
        self._use_device("cpu" if ray is not None else device or "auto")
        if not self.exists():
            self._create(ModelSpec.resolve(model, pretrained), image_precision or "fp32", roots, exclude,
                         options.batch_size)
        self.folder.mkdir(parents=True, exist_ok=True)
        with writer_lock(self.folder / LOCK_FILE, self.notice):
            catalog = self._writable_catalog()
            self._check_model(catalog, model, pretrained)
            self._check_precision(catalog, image_precision)
            check_device(device, cpu_only=_precision(catalog) == "int8")
            verify_weights_for_run(catalog, self._spec(catalog), str(self.folder))
            store = self._index_store(catalog)
            store.start_run()
            save_now_and_then = lambda: store.save_every(INDEX_SAVE_SECONDS)  # noqa: E731

            def remove(ids: list[int], failures: list[bytes]) -> None:
                commit_removals(catalog, ids, failures)
                save_now_and_then()

            plan = make_plan(catalog, roots, exclude, reporter.skipped, remove)
            try:
                summary = run(catalog, plan, self._loaded_model, options, reporter, save_now_and_then)
            finally:
                plan.close()
            summary.metadata_filled = fill_missing_metadata(catalog, roots)
            remember_roots(catalog, roots, list(exclude))
            store.finish()
            record_run(catalog, summary, self._model)
            self._export_text_tower_if_missing()
        summary.seconds = time.monotonic() - started
        return summary

    def remembered_roots(self) -> list[IndexRoot]:
        """The folders (with their excludes) earlier `index` runs were given."""
        return index_roots(self._readable_catalog())

    def reindex(self, options: "IndexOptions | None" = None, reporter: "Reporter | None" = None,
                ray: str | None = None, device: str | None = None) -> "IndexSummary":
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
                                 reporter=reporter, ray=ray, device=device)
            for name in ("added", "updated", "removed", "unchanged", "failed", "reused", "encoded", "seconds"):
                setattr(total, name, getattr(total, name) + getattr(summary, name))
            total.device = summary.device or total.device
            total.compute_precision = summary.compute_precision or total.compute_precision
        return total

    def repair(self) -> "RepairSummary":
        """Rebuild the vector index from the catalog (training the ANN kind as the size calls for) and save it."""
        from indexer.lock import writer_lock

        started = time.monotonic()
        self._readable_catalog()  # a missing library is reported as such
        with writer_lock(self.folder / LOCK_FILE, self.notice):
            index = self._index_store(self._writable_catalog()).repair()
        return RepairSummary(str(self.folder), index.ntotal, index.kind, time.monotonic() - started)

    def _create(self, spec: "ModelSpec", image_precision: str, roots: Sequence[bytes] = (),
                exclude: Sequence[str] = (), first_batch: int = 32) -> None:
        """Load (and for int8, check) the model first: weights that cannot be had, or an int8 tower refused on the
        first photos, leave no half-made library behind (nothing is written before the catalog appears whole)."""
        from indexer.lock import writer_lock
        from indexer.model import load_model
        from indexer.model_identity import preprocess_meta, weights_meta

        identity = weights_meta(spec)
        if image_precision == "int8":
            from indexer.int8_check import check_int8

            model = load_model(spec, "fp32", "cpu", self.notice)
            check_int8(model, roots, exclude, first_batch)
        else:
            model = load_model(spec, image_precision, self._device, self.notice)
        self.folder.mkdir(parents=True, exist_ok=True)
        with writer_lock(self.folder / LOCK_FILE, self.notice):
            if self.exists():
                return  # another process created it meanwhile; the model check follows under the lock
            catalog = Catalog.create(self.catalog_path,
                                     {"model": spec.name, "pretrained": spec.pretrained, "dim": str(model.dim),
                                      "image_precision": image_precision}
                                     | identity | preprocess_meta(model.preprocess_cfg))
            self._catalog, self._model = catalog, model

    def _use_device(self, device: str) -> None:
        """Run the image tower on `device` from now on (a model loaded for another device is dropped)."""
        if device != self._device:
            self._device, self._model, self._query = device, None, None

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
        """Export (or re-export a damaged or older) text tower; a model that cannot be exported is noted."""
        from indexer.tower_manifest import export_reason

        target, skipped = self.folder / TEXT_TOWER_DIR, self.folder / TEXT_TOWER_SKIPPED
        if skipped.exists() or export_reason(target) is None:
            return
        from indexer.text_tower import export_text_tower

        try:
            model = self._loaded_model()
        except SearchEngineError as exc:
            self.notice(f"text tower not re-exported ({exc})")
            return
        if not export_text_tower(model.model, model.tokenizer, target):
            if target.exists():
                import shutil

                shutil.rmtree(target, ignore_errors=True)  # a damaged export must not be taken for a usable one
            skipped.write_text("this model's text tower could not be exported to numpy; text queries use torch\n")

    # --- moving embeddings in and out ----------------------------------------------------------------------------
    def export(self, folder: str | Path, format: str = "parquet") -> "ExportSummary":
        """Write every image with its embedding to `folder` (Parquet, streamed in row groups)."""
        from indexer.export import export_parquet

        if format != "parquet":
            raise SearchEngineError(f"unknown export format {format!r} (known: parquet)")
        return export_parquet(self._readable_catalog(), Path(folder).expanduser().absolute())

    def import_embeddings(self, sources: Sequence[str], model: str | None = None, pretrained: str | None = None,
                          require_files: bool = False) -> "ImportSummary":
        """Add embeddings computed elsewhere (our export, clip-retrieval output); paths already held are kept."""
        from indexer.importer import ImportSummary, import_source, open_source, spec_of_sources
        from indexer.lock import writer_lock

        started = time.monotonic()
        opened = [open_source(Path(s)) for s in sources]
        spec = spec_of_sources(opened, model, pretrained)
        if not self.exists():
            self._create(spec, "fp32")  # loads the model: the dims are checked and text queries work as usual
        summary = ImportSummary()
        with writer_lock(self.folder / LOCK_FILE, self.notice):
            catalog = self._writable_catalog()
            self._check_model(catalog, spec.name, spec.pretrained)
            dim = int(catalog.meta()["dim"])
            for source in opened:
                if source.dim != dim:
                    raise ModelMismatchError(f"{source.path} holds {source.dim}-d embeddings, library {self.folder} "
                                             f"{dim}-d ones")
            store = self._index_store(catalog)
            store.start_run()
            for source in opened:
                import_source(catalog, source, require_files, lambda: store.save_every(INDEX_SAVE_SECONDS), summary)
            store.finish()
            self._export_text_tower_if_missing()
        summary.seconds = time.monotonic() - started
        return summary

    # --- searching --------------------------------------------------------------------------------------------
    def search(self, text: str | None = None, image: str | None = None, limit: int = 20,
               exact: bool = False, *, terms: "Sequence[Term] | None" = None, min_score: float | None = None,
               cutoff: str | None = None, filters: SearchFilters | None = None) -> list[SearchHit]:
        """By a text, an image file, or weighted `terms` (query arithmetic, see searchengine.expression), among
        the images passing `filters`; filters alone give the newest matching images (score None).

        `min_score` drops hits scoring below it; `cutoff="auto"` keeps only hits that stand out from the
        library's scores for this query (searchengine.cutoff).
        """
        given = sum(q is not None for q in (text, image, terms))
        if given > 1 or (given == 0 and not filters):
            raise QueryError("give either a text, an image or query terms to search for (or filters alone)")
        if limit < 1:
            raise QueryError("--limit must be at least 1")
        if cutoff not in (None, "off", "auto"):
            raise QueryError(f"unknown cutoff {cutoff!r} (known: off, auto)")
        catalog = self._readable_catalog()
        if catalog.image_count() == 0:
            raise QueryError(f"library {self.folder} has no images yet; run `searchengine index FOLDER` first")
        if given == 0:
            return self._newest(catalog, filters, limit)
        if (text is not None or terms is not None) and not exact:
            # A cold page cache: the text tower's weights are read while faiss is imported and the index opened.
            self._query_encoder().prefetch()
            self._readable_index()
        if terms is not None:
            query = self.query_vector(terms)[None, :]
        else:
            query = self._query_encoder().texts([text]) if text is not None else \
                self._query_encoder().image_file(image, catalog)
        hits = self.search_vector(query[0], limit, exact, filters)
        if min_score is None and cutoff in (None, "off"):
            return hits
        from searchengine.cutoff import cut

        return cut(hits, query[0], catalog, min_score, cutoff)

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

    def query_vector(self, terms: "Sequence[Term]", reuse_stored: bool = True) -> np.ndarray:
        """The unit query vector of weighted terms (indexed, unchanged image files use their stored embedding)."""
        from searchengine.expression import combine

        if not terms:
            raise QueryError("no query terms given")
        catalog = self._readable_catalog() if self.exists() else None
        vectors = self._query_encoder().terms(terms, catalog, reuse_stored)
        return combine(vectors, [t.weight for t in terms])

    def search_vector(self, vector: np.ndarray, limit: int = 20, exact: bool = False,
                      filters: SearchFilters | None = None) -> list[SearchHit]:
        """The best `limit` images (among those passing `filters`) whose files still exist, best first."""
        catalog = self._readable_catalog()
        dim = int(catalog.meta()["dim"])
        query = np.asarray(vector, dtype=np.float32).reshape(1, dim)
        index = None if exact or filters else self._readable_index()
        total = catalog.image_count()
        want, fetch = min(limit, total), min(limit, total)
        while True:
            if filters:
                scores, ids = filtered_search(catalog, self._readable_index, query[0], fetch, filters, dim, exact)
                scores, ids = scores[None, :], ids[None, :]
            else:
                scores, ids = rank(catalog, index, query, fetch, dim)
            hits, missing = _existing_hits(catalog, scores, ids)
            if len(hits) >= want or fetch >= total or (filters and ids.shape[1] < fetch) or missing >= MISSING_LIMIT:
                break
            fetch = min(total, 2 * fetch + missing)
        self._notice_missing(missing)
        return _with_metadata(catalog, hits[:limit])

    def _newest(self, catalog: Catalog, filters: SearchFilters, limit: int) -> list[SearchHit]:
        """Filters alone: the newest matching images (by taken_at) whose files still exist."""
        where, params = filters.sql(catalog)
        fetch = limit
        while True:
            ids = np.array(newest(catalog, where, params, fetch), np.int64).reshape(1, -1)
            hits, missing = _existing_hits(catalog, np.zeros(ids.shape, np.float32), ids)
            if len(hits) >= limit or ids.shape[1] < fetch or missing >= MISSING_LIMIT:
                break
            fetch = 2 * fetch + missing
        self._notice_missing(missing)
        return [replace(hit, score=None) for hit in _with_metadata(catalog, hits[:limit])]

    def _notice_missing(self, missing: int) -> None:
        if missing:
            count = f"at least {missing}" if missing >= MISSING_LIMIT else str(missing)
            self.notice(f"{count} result(s) skipped: their files no longer exist (a folder moved, or a drive "
                        "not mounted?); `searchengine index` on their folder will remove them")

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

    def duplicates(self, threshold: float | None = None) -> list["DuplicateGroup"]:
        """Groups of identical files and near-identical images (cosine >= threshold), most images first."""
        from searchengine.duplicates import DEFAULT_THRESHOLD, find_duplicates

        catalog = self._readable_catalog()
        if catalog.image_count() == 0:
            return []
        index = self._readable_index()
        if index is None:  # a large library whose index file is unusable: a reader builds one for this run only
            from indexer.vector_index import VectorIndex

            self.notice("building a vector index in memory for this run (`searchengine repair` saves one)")
            changes = catalog.changes(int(catalog.meta()["dim"]))
            index = VectorIndex.build(int(catalog.meta()["dim"]), changes.ids, changes.vectors, seq=changes.seq)
        return find_duplicates(catalog, index, DEFAULT_THRESHOLD if threshold is None else threshold)

    # --- status and embeddings ------------------------------------------------------------------------------------
    def status(self) -> LibraryStatus:
        catalog = self._readable_catalog()
        meta = catalog.meta()
        images, failed = catalog.counts()
        tower_problem = self._text_tower_problem()
        return LibraryStatus(str(self.folder), images, failed, meta["model"], meta["pretrained"], int(meta["dim"]),
                             meta.get("index_kind", "none"), "torch" if tower_problem else "numpy",
                             meta.get("image_precision", "fp32"), tower_problem or "", meta.get("device", "none"),
                             meta.get("compute_precision", "none"))

    def _text_tower_problem(self) -> str | None:
        """Why text queries go to torch (None: the numpy export is complete and gives its recorded probe)."""
        skipped = self.folder / TEXT_TOWER_SKIPPED
        if skipped.exists():
            return skipped.read_text().strip()
        from indexer.tower_manifest import export_reason

        return export_reason(self.folder / TEXT_TOWER_DIR)

    def failures(self) -> list[tuple[str, str]]:
        return [(os.fsdecode(f.path), f.reason) for f in self._readable_catalog().failures()]

    def embed(self, texts: Sequence[str] = (), images: Sequence[str] = (), model: str | None = None,
              pretrained: str | None = None, device: str | None = None) -> list[np.ndarray]:
        """Embeddings exactly as `index` and `search` compute them; without a library, of the given model.
        Images are encoded on `device` (default auto, as `index`); text on the CPU."""
        from indexer.device import check_device

        check_device(device)
        self._use_device(device or "auto")
        if self.exists():
            self._check_model(self._readable_catalog(), model, pretrained)
        elif self._model is None:
            from indexer.model import ModelSpec, load_model

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
        from indexer.model import ModelSpec

        meta = catalog.meta()
        return ModelSpec(meta["model"], meta["pretrained"])

    def _loaded_model(self) -> "ClipModel":
        """The library's model on this Library's device, refused if its weights or preprocessing changed."""
        if self._model is None:
            from indexer.model import load_model
            from indexer.model_identity import check_preprocess, verify_weights

            catalog = self._readable_catalog()
            spec, meta = self._spec(catalog), catalog.meta()
            updates = verify_weights(meta, spec, str(self.folder))
            model = load_model(spec, _precision(catalog), self._device, self.notice)
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
        from indexer.index_store import IndexStore

        if self._store is None or self._store.catalog is not catalog:
            self._store = IndexStore(catalog, self.folder / INDEX_FILE, int(catalog.meta()["dim"]), self.notice,
                                     writer_active=lambda: not catalog.writable and self._writer_active())
        return self._store

    def _readable_index(self):
        """The index as of the latest commit, or None (answer exactly). A reader that rebuilt or caught up a
        small flat index saves it for the next reader when no writer runs; larger ones are left to writers."""
        from indexer.vector_index import FLAT

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
        from searchengine.query import QueryEncoder

        if self._query is None:
            expected = self.exists() and not (self.folder / TEXT_TOWER_SKIPPED).exists()
            self._query = QueryEncoder(self.folder / TEXT_TOWER_DIR if expected else None, self._loaded_model,
                                       self.notice)
        return self._query


def _ray_pipeline(address: str):
    """run_pipeline's Ray counterpart, bound to `address`."""
    from functools import partial

    from indexer.ray_pipeline import run_ray_pipeline
    from indexer.ray_session import import_ray

    import_ray()  # a missing extra is said before any planning
    return partial(run_ray_pipeline, address=address)


def _precision(catalog: Catalog) -> str:
    return catalog.meta().get("image_precision", "fp32")


class _Quiet:
    def start(self, total: int) -> None: ...
    def skipped(self, path: bytes, reason: str) -> None: ...
    def advance(self, n: int) -> None: ...


def _with_metadata(catalog: Catalog, hits: list[SearchHit]) -> list[SearchHit]:
    """The hits with the metadata their JSON carries (taken_at, size, camera, place), read in one query."""
    metadata = metadata_for(catalog, [h.id for h in hits])
    out = []
    for hit in hits:
        meta = metadata.get(hit.id)
        out.append(hit if meta is None else replace(
            hit, taken_at=taken_at_text(meta), width=meta.width, height=meta.height, camera=camera_text(meta),
            latitude=meta.latitude, longitude=meta.longitude))
    return out


def _existing_hits(catalog: Catalog, scores: np.ndarray, ids: np.ndarray) -> tuple[list[SearchHit], int]:
    """Hits whose files exist now (a stat each), and how many were skipped because theirs are gone."""
    paths = catalog.paths_for([int(i) for i in ids[0] if i >= 0])
    absent = {i for i, p in paths.items() if not os.path.exists(p)}
    if absent:  # imported from elsewhere without a local file: searchable by path all the same
        from indexer.catalog_exchange import imported_without_file

        absent -= imported_without_file(catalog, sorted(absent))
    hits, missing = [], 0
    for score, image_id in zip(scores[0], ids[0]):
        path = paths.get(int(image_id))
        if path is None:
            continue
        if int(image_id) in absent:
            missing += 1
            continue
        hits.append(SearchHit(os.fsdecode(path), float(score), int(image_id)))
    return hits, missing
