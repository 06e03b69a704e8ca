"""The indexing half of `Library`: index, re-index, repair, and moving embeddings in and out.

Imports of the indexing side (torch wrapper, PIL, filelock, workers) stay inside the methods that need them:
a cold query pays only for what answering costs.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from indexer.catalog.images import IndexRoot, index_roots
from indexer.catalog.store import Catalog
from indexer.errors import ModelMismatchError, SearchEngineError
from indexer.pipeline.scan import absolute
from searchengine.library.layout import LOCK_FILE, TEXT_TOWER_DIR, TEXT_TOWER_SKIPPED

if TYPE_CHECKING:
    from indexer.exchange.export import ExportSummary
    from indexer.exchange.importer import ImportSummary
    from indexer.model.clip import ModelSpec
    from indexer.pipeline.local import IndexOptions, IndexSummary, Reporter
    from searchengine.library.host import LibraryHost as _Host
else:
    _Host = object

@dataclass
class RepairSummary:
    library: str
    images: int
    index: str
    seconds: float


class LibraryIndexing(_Host):
    """Mixed into `Library`, which provides the catalog, model and index plumbing these methods use."""

    def index(self, paths: Sequence[str], model: str | None = None, pretrained: str | None = None,
              options: "IndexOptions | None" = None, exclude: Sequence[str] = (),
              reporter: "Reporter | None" = None, image_precision: str | None = None,
              ray: str | None = None, device: str | None = None) -> "IndexSummary":
        """Index image files under `paths`. `image_precision` ("fp32", or opt-in "int8") is fixed at creation.
        `ray`: run the work on Ray, "auto" (a local instance) or a cluster address (needs the ray extra).
        `device` (auto, cpu, cuda, cuda:N, mps; default auto) runs the image tower."""
        from indexer.index_run import run_index, runner_for
        from indexer.lock import writer_lock
        from indexer.model.clip import ModelSpec
        from indexer.model.device import check_device
        from indexer.pipeline.local import IndexOptions
        from indexer.pipeline.video import remembered_video_options

        started = time.monotonic()
        reporter = reporter or _Quiet()
        run = runner_for(ray)
        roots = [absolute(p) for p in paths]
        for root, given in zip(roots, paths):
            if not os.path.exists(root):
                raise SearchEngineError(f"no such file or folder: {given}")
        options = options or IndexOptions()
        if options.ocr:  # a missing extra is said before anything is created or written
            from indexer.ocr.engine import check_available

            check_available()
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
            options = replace(options, video=remembered_video_options(catalog, options.video_interval_s,
                                                                     options.video_max_segments))
            from indexer.catalog.texts import ocr_enabled, set_ocr  # here: queries import this module too

            if options.ocr is not None and options.ocr != ocr_enabled(catalog):
                set_ocr(catalog, options.ocr)
            check_device(device, cpu_only=precision_of(catalog) == "int8")
            summary = run_index(catalog, self._index_store(catalog), self._spec(catalog), str(self.folder), roots,
                                exclude, options, reporter, self._loaded_model, lambda: self._model, run)
            self._export_text_tower_if_missing()
        summary.seconds = time.monotonic() - started
        return summary

    def remembered_roots(self) -> list[IndexRoot]:
        """The folders (with their excludes) earlier `index` runs were given."""
        return index_roots(self._readable_catalog())

    def reindex(self, options: "IndexOptions | None" = None, reporter: "Reporter | None" = None,
                ray: str | None = None, device: str | None = None) -> "IndexSummary":
        """`index` again over every remembered root, each with the excludes it was last given."""
        from indexer.pipeline.local import IndexSummary

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
            for name in ("added", "updated", "removed", "unchanged", "failed", "reused", "encoded", "videos",
                         "segments", "seconds", "words_read", "words_with_text", "words_failed", "words_seconds"):
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
        from indexer.model.clip import load_model
        from indexer.model.identity import preprocess_meta, weights_meta

        identity = weights_meta(spec)
        if image_precision == "int8":
            from indexer.pipeline.int8_check import check_int8

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
        from indexer.model.clip import ModelSpec, normalise_pretrained

        mine = self._spec(catalog)
        asked = ModelSpec(ModelSpec.resolve(name, None).name if name else mine.name,
                          mine.pretrained if pretrained is None else normalise_pretrained(pretrained))
        if asked != mine:
            raise ModelMismatchError(
                f"library {self.folder} uses model {mine.describe()}, not {asked.describe()}; "
                "use another --library for another model")

    def _check_precision(self, catalog: Catalog, asked: str | None) -> None:
        mine = precision_of(catalog)
        if asked is not None and asked != mine:
            raise ModelMismatchError(f"library {self.folder} encodes images in {mine}, not {asked}; "
                                     "the image precision is chosen when a library is created")

    def _export_text_tower_if_missing(self) -> None:
        """Export (or re-export a damaged or older) text tower; a model that cannot be exported is noted."""
        from indexer.model.tower_manifest import export_reason, outdated

        target, skipped = self.folder / TEXT_TOWER_DIR, self.folder / TEXT_TOWER_SKIPPED
        if skipped.exists() or (export_reason(target) is None and not outdated(target)):
            return
        from indexer.model.text_tower import export_text_tower

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
        from indexer.exchange.export import export_parquet

        if format != "parquet":
            raise SearchEngineError(f"unknown export format {format!r} (known: parquet)")
        return export_parquet(self._readable_catalog(), Path(folder).expanduser().absolute())

    def import_embeddings(self, sources: Sequence[str], model: str | None = None, pretrained: str | None = None,
                          require_files: bool = False) -> "ImportSummary":
        """Add embeddings computed elsewhere (our export, clip-retrieval output); paths already held are kept."""
        from indexer.exchange.importer import ImportSummary, import_source, open_source, spec_of_sources
        from indexer.index_run import INDEX_SAVE_SECONDS
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


def precision_of(catalog: Catalog) -> str:
    """The image precision the library was created with ("fp32" or "int8")."""
    return catalog.meta().get("image_precision", "fp32")


class _Quiet:
    def start(self, total: int) -> None: ...
    def skipped(self, path: bytes, reason: str) -> None: ...
    def advance(self, n: int) -> None: ...
