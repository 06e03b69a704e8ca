"""Worker side of an index run: read a file once, hash those bytes, reuse a known embedding or decode.

Runs in worker processes; it imports neither torch nor SQLAlchemy (catalog reads use stdlib sqlite3).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from indexer.catalog.moves import Claim
from indexer.catalog.store import Catalog
from indexer.images.decode import ImageDecodeError, ModelImage, PreprocessConfig, decode_for_index
from indexer.images.files import read_file
from indexer.images.metadata import ImageMetadata, header_metadata
from indexer.images.thumbnails import store_thumbnail
from indexer.pipeline.plan import Task
from indexer.pipeline.video import VideoOptions, VideoSamples, prepare_video
from indexer.video.files import is_video_name


@dataclass
class Prepared:
    """The outcome for one file: exactly one of `pixels`, `embedding`, `video`, `error` is set."""

    task: Task
    size: int = 0
    mtime_ns: int = 0
    content_hash: bytes = b""
    pixels: np.ndarray | None = None
    embedding: np.ndarray | None = None
    error: str | None = None
    metadata: ImageMetadata | None = None
    vanished: bool = False  # deleted since the scan: an error to report, not a failure to record
    claim: Claim | None = None  # a moved file's old entry, which this new path takes over
    video: VideoSamples | None = None  # a video's samples (to encode) or reused segments, instead of pixels
    no_text_by: str | None = None  # OCR's gate saw no text in the decoded photo: the engine's name


class Preparer:
    """Holds what a worker reuses across files: the preprocessing config and a read-only catalog connection."""

    def __init__(self, catalog_path: str, cfg: PreprocessConfig, video: VideoOptions = VideoOptions(),
                 ocr_gate: bool = False):
        self.cfg = cfg
        self.ocr_gate = ocr_gate
        self._ocr = None  # the OCR engine, loaded at the first photo that needs its gate
        self.video_options = video
        self.catalog_path = catalog_path
        self._catalog: Catalog | None = None
        # SEARCHENGINE_THUMBNAILS=0 leaves thumbnails to the server's first request (and lets benchmarks compare).
        self.thumbnails = os.environ.get("SEARCHENGINE_THUMBNAILS", "1") != "0"

    def __call__(self, task: Task) -> Prepared:
        if is_video_name(task.path):
            return self._video(task)
        try:
            data, size, mtime_ns = read_file(task.path)
        except FileNotFoundError as exc:
            return Prepared(task, error=exc.strerror or type(exc).__name__, vanished=True)
        except OSError as exc:
            return Prepared(task, error=exc.strerror or type(exc).__name__)
        except ValueError as exc:
            return Prepared(task, error=str(exc))
        result = Prepared(task, size, mtime_ns, hashlib.blake2b(data, digest_size=16).digest())
        if not data:
            result.error = "empty file"
            return result
        reusable = self._read_only_catalog().reusable(result.content_hash)
        if reusable is not None:
            result.embedding = reusable.embedding
            result.claim = reusable.claim if task.existing_id is None else None
            result.metadata = header_metadata(data)  # a copy's embedding is shared, its metadata is its own
        else:
            try:
                on_decoded = self._on_decoded(result)
                result.pixels, result.metadata = decode_for_index(data, self.cfg, on_decoded=on_decoded)
            except ImageDecodeError as exc:
                result.error = str(exc)
        if result.metadata is not None:
            result.metadata = result.metadata.with_mtime_fallback(mtime_ns)
        return result

    def _video(self, task: Task) -> Prepared:
        outcome = prepare_video(task.path, self._read_only_catalog(), self.cfg, self.video_options)
        return Prepared(task, outcome.size, outcome.mtime_ns, outcome.content_hash, error=outcome.error,
                        vanished=outcome.vanished, video=outcome.samples,
                        metadata=outcome.samples.metadata if outcome.samples else None)

    def _on_decoded(self, result: Prepared) -> Callable[[ModelImage], None] | None:
        """What is done with the decoded image besides the model's input: the thumbnail, OCR's gate."""
        thumbnail = self._thumbnail(result.content_hash) if self.thumbnails else None
        if not self.ocr_gate:
            return thumbnail

        def both(decoded: ModelImage) -> None:
            if thumbnail is not None:
                thumbnail(decoded)
            result.no_text_by = self._no_text(decoded)

        return both

    def _no_text(self, decoded: ModelImage) -> str | None:
        """The engine's name when OCR's gate sees no text in the decoded (reduced) image: the words phase then has
        nothing to read in it. A strip, or a gate that fails, leaves the photo to the words phase."""
        try:
            from indexer.ocr.engine import OcrEngine, engine_name
            from indexer.ocr.gate import TextGate

            if OcrEngine.is_strip(decoded.full_size):
                return None
            if self._ocr is None:
                self._ocr = (TextGate(threads=1), engine_name())
            gate, name = self._ocr
            return None if gate.has_text(decoded.image) else name
        except Exception:  # noqa: BLE001 - the gate is a shortcut; the words phase reads what it could not judge
            return None

    def _thumbnail(self, content_hash: bytes) -> Callable[[ModelImage], None]:
        def store(decoded: ModelImage) -> None:
            try:
                store_thumbnail(Path(self.catalog_path).parent, content_hash, decoded)
            except Exception:  # noqa: BLE001 - a thumbnail never fails an index run
                pass  # a cache: the server makes a missing thumbnail on first request

        return store

    def _read_only_catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.open(Path(self.catalog_path), writable=False)
        return self._catalog


_worker: Preparer | None = None


def init_worker(catalog_path: str, cfg: PreprocessConfig, video: VideoOptions = VideoOptions(),
                ocr_gate: bool = False) -> None:
    global _worker
    lowest_priority()
    _worker = Preparer(catalog_path, cfg, video, ocr_gate)


def lowest_priority() -> None:
    """Decoders yield the cores to the model's threads: measured +4% images/s on 2 cores, steadier under load."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def prepare_in_worker(task: Task) -> Prepared:
    assert _worker is not None, "init_worker was not called"
    return _worker(task)
