"""Phase two of an index run: decode in worker processes, encode batches in this one, commit batch by batch.

A batch is committed in one transaction: a crash loses at most the batch in flight, and a re-run resumes.
"""
from __future__ import annotations

import multiprocessing
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from indexer.catalog.store import BatchWrite, Catalog, FailedFile, StoredImage
from indexer.cpu import usable_cores
from indexer.images.decode import PreprocessConfig
from indexer.pipeline.plan import Plan, Task
from indexer.pipeline.prepare import Prepared, Preparer, init_worker, prepare_in_worker
from indexer.pipeline.video import VideoOptions
from indexer.pipeline.video_store import stored_video

REMOVALS_PER_TRANSACTION = 5000


class Encoder(Protocol):
    preprocess_cfg: PreprocessConfig

    def encode_pixels(self, batch: np.ndarray) -> np.ndarray: ...


class Reporter(Protocol):
    def start(self, total: int) -> None: ...
    def skipped(self, path: bytes, reason: str) -> None: ...
    def advance(self, n: int) -> None: ...


@dataclass
class IndexOptions:
    batch_size: int = 32
    workers: int | None = None  # decode processes; 0 decodes in this process
    video_interval_s: float | None = None  # asked for this run (then remembered); None: the library's own
    video_max_segments: int | None = None
    video: VideoOptions | None = None  # the sampling in effect (set by the run from the above and the library)
    ocr: bool | None = None  # read the text in pictures: True/False turns it on/off (remembered); None: as before
    ocr_gate: bool = False  # OCR is on: decode workers ask OCR's gate whether a photo holds text (set by the run)


@dataclass
class IndexSummary:
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    reused: int = 0
    videos: int = 0  # videos stored (part of `added` and `updated`)
    segments: int = 0  # their segments
    moved: int = 0  # entries that followed their renamed or moved file (part of `added` and `reused`)
    encoded: int = 0
    metadata_filled: int = 0  # rows from before metadata was stored, filled in from their headers
    seconds: float = 0.0  # the whole run's wall time
    embed_seconds: float = 0.0  # phase timing: reading, decoding, encoding and storing the files to do
    device: str | None = None  # what encoded this run's images (None: no image needed the model)
    compute_precision: str | None = None  # "fp32", "int8", or a checked GPU precision such as "fp16"
    words_read: int = 0  # OCR on: pictures read this run (by the gate or the words phase), with text, failures
    words_with_text: int = 0
    words_failed: int = 0
    words_seconds: float = 0.0
    words_note: str = ""  # why the words were not read (OCR on, but its extra no longer installed)

    @property
    def images_per_s(self) -> float:
        """Files stored per second of the embedding phase (a scan of unchanged files is not a rate)."""
        done = self.added + self.updated
        return done / self.embed_seconds if self.embed_seconds > 0 else 0.0


def default_workers() -> int:
    return usable_cores()


def run_pipeline(catalog: Catalog, plan: Plan, encoder: Callable[[], Encoder], options: IndexOptions,
                 reporter: Reporter, after_commit: Callable[[], None]) -> IndexSummary:
    """Embed and store the plan's tasks (its removals are already committed); `encoder` is called only if pixels
    need it. Entries removed by this run that no moved file claimed are dropped at the end."""
    with embedding_run(catalog, plan, options, reporter, after_commit) as writer:
        if plan.todo_count:
            _embed_all(catalog, plan, encoder(), options, reporter, writer)
    return writer.summary


def _embed_all(catalog: Catalog, plan: Plan, model: Encoder, options: IndexOptions, reporter: Reporter,
               writer: "BatchWriter") -> None:
    pending: list[Prepared] = []
    for prepared in _prepared(plan.tasks(), catalog, model.preprocess_cfg, options):
        if prepared.error is not None:
            reporter.skipped(prepared.task.path, prepared.error)
            writer.fail(prepared)
        elif prepared.embedding is not None:
            writer.summary.reused += 1
            writer.store(prepared, prepared.embedding)
        elif prepared.video is not None:
            writer.store_video(prepared, model, options.batch_size)
        else:
            pending.append(prepared)
            if len(pending) >= options.batch_size:
                _encode(model, pending, writer)
        reporter.advance(1)
    _encode(model, pending, writer)


@contextmanager
def embedding_run(catalog: Catalog, plan: Plan, options: IndexOptions, reporter: Reporter,
                  after_commit: Callable[[], None]) -> Iterator["BatchWriter"]:
    """The run's batch writer, holding the plan's failures; when the body is done: the last batch, the drop of
    removed entries no moved file claimed, and the phase's timing (shared by the local and the Ray pipeline)."""
    started = time.monotonic()
    summary = IndexSummary(unchanged=plan.unchanged, failed=plan.known_failed + len(plan.new_failures),
                           removed=plan.removed)
    writer = BatchWriter(catalog, summary, options.batch_size, after_commit)
    writer.batch.failed.extend(plan.new_failures)
    reporter.start(plan.todo_count)
    yield writer
    writer.flush()
    catalog.forget_vanished()
    after_commit()
    summary.embed_seconds = time.monotonic() - started


def _encode(model: Encoder, pending: list[Prepared], writer: "BatchWriter") -> None:
    if not pending:
        return
    embeddings = model.encode_pixels(np.stack([p.pixels for p in pending]))
    writer.summary.encoded += len(pending)
    for prepared, embedding in zip(pending, embeddings):
        prepared.pixels = None
        writer.store(prepared, embedding)
    pending.clear()


def _prepared(tasks: Iterable[Task], catalog: Catalog, cfg: PreprocessConfig, options: IndexOptions) -> Iterator[Prepared]:
    """Prepared files in task order; at most a few batches in flight, so memory stays bounded."""
    workers = default_workers() if options.workers is None else options.workers
    if workers == 0:
        preparer = Preparer(str(catalog.path), cfg, options.video or VideoOptions(), options.ocr_gate)
        yield from map(preparer, tasks)
        return
    # forkserver: workers start from a clean process, never a fork of one running torch threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["indexer.pipeline.prepare"])
    limit = 2 * options.batch_size + 2 * workers
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker,
                             initargs=(str(catalog.path), cfg, options.video or VideoOptions(),
                                       options.ocr_gate)) as pool:
        inflight: deque[Future] = deque()
        for task in tasks:
            inflight.append(pool.submit(prepare_in_worker, task))
            if len(inflight) >= limit:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()


class BatchWriter:
    """Accumulates results and commits them a batch at a time."""

    def __init__(self, catalog: Catalog, summary: IndexSummary, batch_size: int, after_commit: Callable[[], None]):
        self.catalog = catalog
        self.summary = summary
        self.batch_size = batch_size
        self.after_commit = after_commit
        self.batch = BatchWrite()

    def store(self, prepared: Prepared, embedding: np.ndarray) -> None:
        task = prepared.task
        self.batch.stored.append(StoredImage(task.path, prepared.size, prepared.mtime_ns, prepared.content_hash,
                                             np.asarray(embedding, dtype=np.float32), task.existing_id,
                                             prepared.claim, prepared.metadata, prepared.no_text_by))
        self.summary.moved += prepared.claim is not None
        self.summary.words_read += prepared.no_text_by is not None  # read by OCR's gate: no text
        if task.existing_id is None:
            self.summary.added += 1
        else:
            self.summary.updated += 1
        self._maybe_flush()

    def store_video(self, prepared: Prepared, model: Encoder | None, batch_size: int) -> None:
        """Encode a video's samples (unless its segments are reused), cut them into segments, store it whole."""
        video = stored_video(prepared, model, batch_size, self.catalog.path.parent)
        self.summary.encoded += 0 if prepared.video.reused else len(prepared.video.times)
        self.summary.reused += prepared.video.reused is not None
        self.summary.moved += video.moved_from is not None
        self.summary.videos += 1
        self.summary.segments += len(video.segments)
        if prepared.task.existing_id is None:
            self.summary.added += 1
        else:
            self.summary.updated += 1
        self.batch.videos.append(video)
        self._maybe_flush()

    def fail(self, prepared: Prepared) -> None:
        task = prepared.task
        if prepared.vanished:  # gone since the scan: no longer indexed, and not a failure to keep listing
            self.batch.removed_failures.append(task.path)
            if task.existing_id is not None:
                self.batch.removed_ids.append(task.existing_id)
                self.summary.removed += 1
        else:
            self.batch.failed.append(FailedFile(task.path, prepared.size, prepared.mtime_ns, prepared.error or ""))
            self.summary.failed += 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if len(self.batch):
            self.catalog.apply(self.batch)
            self.batch = BatchWrite()
            self.after_commit()


def commit_removals(catalog: Catalog, ids: list[int], failures: list[bytes]) -> None:
    """Commit removals found by the plan, before anything is encoded (removed rows stay claimable by moved files)."""
    for start in range(0, max(len(ids), len(failures)), REMOVALS_PER_TRANSACTION):
        end = start + REMOVALS_PER_TRANSACTION
        catalog.apply(BatchWrite(removed_ids=ids[start:end], removed_failures=failures[start:end]))
