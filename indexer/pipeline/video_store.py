"""Main-process side of a video: encode its sampled frames, cut them into segments, keep the segments' thumbnails."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from indexer.catalog.moves import StoredSegment
from indexer.catalog.records import StoredVideo
from indexer.images.decode import normalise_crops
from indexer.images.thumbnails import frame_cache_key, store_thumbnail_bytes
from indexer.video.segments import cut_segments

if TYPE_CHECKING:
    from indexer.images.decode import PreprocessConfig
    from indexer.pipeline.prepare import Prepared


class Encoder(Protocol):
    """What encodes the frames: the index run's image model (local.Encoder)."""

    preprocess_cfg: "PreprocessConfig"

    def encode_pixels(self, batch: np.ndarray) -> np.ndarray: ...


def stored_video(prepared: "Prepared", model: Encoder | None, batch_size: int, library: Path) -> StoredVideo:
    """The video as the catalog stores it: reused segments as they were, else its samples encoded and cut."""
    samples = prepared.video
    assert samples is not None
    task = prepared.task
    if samples.reused is not None and samples.reused.segments:
        segments = samples.reused.segments
        moved_from, moved_kind = samples.reused.moved_from, samples.reused.moved_kind
    else:
        assert model is not None and samples.crops is not None
        embeddings = _encode(model, samples.crops, batch_size)
        cuts = cut_segments(samples.times, embeddings, samples.signatures, samples.facts.duration_s)
        segments = [StoredSegment(n, c.start_s, c.end_s, c.frame_s, embeddings[c.sample]) for n, c in enumerate(cuts)]
        _store_thumbnails(library, prepared.content_hash, [(c.frame_s, samples.thumbnails[c.sample]) for c in cuts])
        moved_from = moved_kind = None
    samples.crops, samples.thumbnails = None, []  # the pixels are done with; the batch holds only the segments
    return StoredVideo(task.path, prepared.size, prepared.mtime_ns, prepared.content_hash, samples.facts, segments,
                       samples.metadata, moved_from, moved_kind)


def _encode(model: Encoder, crops: np.ndarray, batch_size: int) -> np.ndarray:
    cfg = model.preprocess_cfg
    # encode_pixels gives unit float32 rows, as it does for photos: stored as they come
    return np.concatenate([model.encode_pixels(normalise_crops(crops[i:i + batch_size], cfg))
                           for i in range(0, len(crops), batch_size)])


def _store_thumbnails(library: Path, content_hash: bytes, frames: list[tuple[float, bytes]]) -> None:
    for frame_s, jpeg in frames:
        try:
            store_thumbnail_bytes(library, frame_cache_key(content_hash, frame_s), jpeg)
        except OSError:
            pass  # a cache: the server makes a missing thumbnail on first request
