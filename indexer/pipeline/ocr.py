"""The words phase of an index run (with OCR on): after the embeddings are committed and searchable, read the
text of every picture not read yet, in worker processes, committing a batch at a time.

What is read is kept by content (indexer/catalog/texts.py), so the phase resumes after a kill where it stopped,
and a renamed or copied photo is never read again. A file changed or gone since it was embedded is left to the
next run; a picture the engine cannot read is recorded as an OCR failure (its embedding is untouched).
"""
from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from indexer.catalog.store import Catalog
from indexer.catalog.texts import ReadResult, ReadTask, pending, pending_count, remove_orphans, store_texts
from indexer.cpu import usable_cores
from indexer.images.decode import ImageDecodeError, load_reduced
from indexer.images.files import read_file
from indexer.ocr.engine import DETAIL_SIDE, GATE_SIDE

BATCH = 16  # pictures per committed transaction
VIDEO_FRAME_SIDE = 1920  # a video frame is read at up to this long side (the engine scales it further)
READ_SIDE = DETAIL_SIDE * 3 // 2  # a photo with text is decoded keeping this long side (JPEG DCT scaling), or whole
# Fewer pictures to read than this: in this process, its threads over the cores. One worker per core is faster
# from 3 pictures on (4000x3000 photos: 1.44 s against 1.50 s; 10: 2.77 s against 4.37 s): starting a worker
# costs little next to reading, and most of a reading is single-threaded (decode, crops, recognition).
SMALL_RUN = 2


@dataclass
class WordsSummary:
    read: int = 0  # pictures read this run
    with_text: int = 0
    failed: int = 0
    skipped: int = 0  # changed or gone since they were embedded: left to the next run
    seconds: float = 0.0


def read_texts(catalog: Catalog, reporter: object, workers: int | None = None) -> WordsSummary:
    """Read every unread picture of the catalog; `reporter` may show a progress line (start_phase, advance)."""
    from indexer.ocr.engine import check_available, engine_name

    check_available()
    started = time.monotonic()
    summary = WordsSummary()
    total = pending_count(catalog)
    if total:
        start_phase = getattr(reporter, "start_phase", None)
        if start_phase is not None:
            start_phase("reading words", total)
        name = engine_name()
        batch: list[ReadResult] = []
        for outcome in _outcomes(catalog, _workers(workers, total)):
            if isinstance(outcome, ReadResult):
                outcome.engine = name
                batch.append(outcome)
                summary.read += 1
                summary.with_text += bool(outcome.lines)
                summary.failed += outcome.error is not None
            else:
                summary.skipped += 1
            getattr(reporter, "advance", lambda n: None)(1)
            if len(batch) >= BATCH:
                store_texts(catalog, batch)
                batch = []
        store_texts(catalog, batch)
    with catalog.write() as conn:
        remove_orphans(conn)
    summary.seconds = time.monotonic() - started
    return summary


def _workers(asked: int | None, total: int) -> int:
    """OCR worker processes: none for a single picture, else one per core."""
    if asked is None:
        return 0 if total < SMALL_RUN else min(usable_cores(), total)
    return max(0, min(asked, total))


def _groups(catalog: Catalog) -> Iterator[list[ReadTask]]:
    """The unread pictures, a video's frames together (one opening of the file for all of them)."""
    after = None
    while True:
        tasks = pending(catalog, 256, after)
        if not tasks:
            return
        after = (tasks[-1].content_hash, tasks[-1].frame_ms)
        group: list[ReadTask] = []
        for task in tasks:
            if group and (task.frame_ms < 0 or task.content_hash != group[0].content_hash):
                yield group
                group = []
            group.append(task)
        yield group


def _outcomes(catalog: Catalog, workers: int) -> Iterator[ReadResult | ReadTask]:
    """A ReadResult per picture read, the task itself for one skipped; a few groups in flight."""
    if workers <= 1:
        reader = Reader(threads=usable_cores() if workers == 0 else 1)
        for group in _groups(catalog):
            yield from reader.read(group)
        return
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        inflight: deque[Future] = deque()
        for group in _groups(catalog):
            inflight.append(pool.submit(_read_in_worker, group))
            if len(inflight) >= 2 * workers:
                yield from inflight.popleft().result()
        while inflight:
            yield from inflight.popleft().result()


class Reader:
    """Worker side: the engine (one thread: the workers are the parallelism) and the reading of files."""

    def __init__(self, threads: int = 1) -> None:
        from indexer.ocr.engine import OcrEngine

        self.engine = OcrEngine(threads=threads)

    def read(self, group: list[ReadTask]) -> list[ReadResult | ReadTask]:
        if group[0].frame_s is not None:
            return self._video(group)
        return [self._photo(group[0])]

    def _photo(self, task: ReadTask) -> ReadResult | ReadTask:
        try:
            data, _, _ = read_file(task.path)
        except (OSError, ValueError):
            return task  # gone or unreadable now: the next index run sees to it
        if hashlib.blake2b(data, digest_size=16).digest() != task.content_hash:
            return task  # changed since it was embedded: read when re-indexed
        try:
            # A quick look first: most photos hold no text, and a reduced JPEG decodes several times faster.
            if not self._strip(data) and not self.engine.has_text(load_reduced(data, GATE_SIDE)):
                return ReadResult(task.content_hash, task.frame_ms, [], "")
            # Lines are cut from this: a JPEG at a reduced DCT scale, still larger than what detection looks at.
            image = load_reduced(data, READ_SIDE)
        except ImageDecodeError as exc:
            return ReadResult(task.content_hash, task.frame_ms, [], "", str(exc))
        except Exception as exc:  # noqa: BLE001 - as in _lines: this picture's failure, not the run's
            return ReadResult(task.content_hash, task.frame_ms, [], "", f"cannot read text ({type(exc).__name__})")
        return self._lines(task, image)

    def _strip(self, data: bytes) -> bool:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as img:
                return self.engine.is_strip(img.size)
        except Exception:  # noqa: BLE001 - unreadable: the decode below says why
            return False

    def _lines(self, task: ReadTask, image: object) -> ReadResult:
        try:
            return ReadResult(task.content_hash, task.frame_ms, self.engine.read(image), "")
        except Exception as exc:  # noqa: BLE001 - the engine's failure on one picture is that picture's failure
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return ReadResult(task.content_hash, task.frame_ms, [], "", f"cannot read text ({reason})")

    def _video(self, group: list[ReadTask]) -> list[ReadResult | ReadTask]:
        from indexer.video.frames import sample_frames
        from indexer.video.packets import MEDIA_ERRORS
        from indexer.video.probe import VideoDecodeError, open_video, probe

        first = group[0]
        try:
            stat = os.stat(first.path)
        except OSError:
            return list(group)
        if (stat.st_size, stat.st_mtime_ns) != (first.size, first.mtime_ns):
            return list(group)
        wanted = sorted(group, key=lambda t: t.frame_s)
        frames: list = []
        try:
            with open_video(first.path) as container:
                info = probe(container)
                frames = list(sample_frames(container, info, [t.frame_s for t in wanted], max_side=VIDEO_FRAME_SIDE,
                                            slack=0.0))
        except (VideoDecodeError, *MEDIA_ERRORS) as exc:
            return [ReadResult(t.content_hash, t.frame_ms, [], "", f"cannot decode video frame ({exc})") for t in wanted]
        out: list[ReadResult | ReadTask] = []
        for task in wanted:
            frame = min(frames, key=lambda f: abs(f.time_s - task.frame_s), default=None)
            if frame is None:
                out.append(ReadResult(task.content_hash, task.frame_ms, [], "", "no frame decoded at this moment"))
            else:
                out.append(self._lines(task, frame.image))
        return out


_reader: Reader | None = None


def _init_worker() -> None:
    from indexer.pipeline.prepare import lowest_priority

    global _reader
    lowest_priority()
    _reader = Reader()


def _read_in_worker(group: list[ReadTask]) -> list[ReadResult | ReadTask]:
    assert _reader is not None, "_init_worker was not called"
    return _reader.read(group)
