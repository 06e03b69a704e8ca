"""One index run over a library's open catalog, start to finish: check the weights, plan (committing removals
as it goes), run the local or the Ray pipeline, fill missing metadata, remember the roots, bring the vector index
up to date and record what the run ran on.

The caller (`Library.index`) holds the writer lock, has created the library if needed and checked the model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

# Through their modules, not their names: each step is looked up when the run reaches it (so a test that
# replaces one step in its own module replaces it here too).
from indexer.catalog import images
from indexer.catalog import texts
from indexer.pipeline import local, metadata_fill, plan, run_meta

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog
    from indexer.model.clip import ClipModel, ModelSpec
    from indexer.pipeline.local import IndexOptions, IndexSummary, Reporter
    from indexer.vectors.store import IndexStore

INDEX_SAVE_SECONDS = 60.0  # a long run saves the vector index this often, so a crash leaves little to catch up

Runner = Callable[..., "IndexSummary"]


def runner_for(ray: str | None) -> Runner:
    """The local pipeline, or its Ray counterpart bound to `ray` (a missing extra is said here, before any
    planning or writing)."""
    if ray is None:
        return local.run_pipeline
    from functools import partial

    from indexer.ray.pipeline import run_ray_pipeline
    from indexer.ray.session import import_ray

    import_ray()
    return partial(run_ray_pipeline, address=ray)


def run_index(catalog: "Catalog", store: "IndexStore", spec: "ModelSpec", library: str, roots: Sequence[bytes],
              exclude: Sequence[str], options: "IndexOptions", reporter: "Reporter",
              load_model: Callable[[], "ClipModel"], loaded_model: Callable[[], "ClipModel | None"],
              run: Runner | None = None) -> "IndexSummary":
    """Index `roots` into `catalog`; `load_model` loads the model when the first image needs encoding,
    `loaded_model` says which model (if any) the run ended up loading; `run` defaults to the local pipeline."""
    run_meta.verify_weights_for_run(catalog, spec, library)
    store.start_run()

    def save_now_and_then() -> None:
        store.save_every(INDEX_SAVE_SECONDS)

    def remove(ids: list[int], failures: list[bytes]) -> None:
        local.commit_removals(catalog, ids, failures)
        save_now_and_then()

    if texts.ocr_enabled(catalog):  # decode workers ask OCR's gate, so the words phase skips photos without text
        from dataclasses import replace

        from indexer.ocr.engine import unavailable_reason

        options = replace(options, ocr_gate=unavailable_reason() is None)
    work = plan.make_plan(catalog, roots, exclude, reporter.skipped, remove)
    try:
        summary = (run or local.run_pipeline)(catalog, work, load_model, options, reporter, save_now_and_then)
    finally:
        work.close()
    summary.metadata_filled = metadata_fill.fill_missing_metadata(catalog, roots)
    images.remember_roots(catalog, roots, list(exclude))
    store.finish()
    run_meta.record_run(catalog, summary, loaded_model())
    if texts.ocr_enabled(catalog):  # the embeddings are committed and searchable: now the words
        from indexer.ocr.engine import unavailable_reason
        from indexer.pipeline.ocr import read_texts

        summary.words_note = unavailable_reason() or ""
        if summary.words_note:
            return summary
        words = read_texts(catalog, reporter, options.workers)
        summary.words_read += words.read  # and those the decode workers' gate found without text
        summary.words_with_text = words.with_text
        summary.words_failed, summary.words_seconds = words.failed, words.seconds
    return summary
