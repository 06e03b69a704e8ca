"""Worker side of a video task: identity without reading the file whole, segments reused when the content is
known, else probe, sample frames by keyframe seek and hand their pixels to the encoder.

Runs in decode worker processes (no torch, no SQLAlchemy), like prepare.py for photos.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from indexer.catalog.moves import ReusableVideo
from indexer.catalog.records import VideoFacts
from indexer.images.decode import PreprocessConfig, crop_for_model
from indexer.images.metadata import ImageMetadata
from indexer.images.thumbnails import THUMBNAIL_QUALITY, THUMBNAIL_SIZE, encode_jpeg, fitted_size
from indexer.video.files import video_content_hash
from indexer.video.frames import sample_frames, sample_times
from indexer.video.probe import VideoDecodeError, open_video, probe
from indexer.video.segments import pixel_signature

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog

DEFAULT_INTERVAL_S = 2.0
DEFAULT_MAX_SEGMENTS = 500


@dataclass(frozen=True)
class VideoOptions:
    interval_s: float = DEFAULT_INTERVAL_S
    max_segments: int = DEFAULT_MAX_SEGMENTS


INTERVAL_KEY, MAX_SEGMENTS_KEY = "video_interval_s", "video_max_segments"


def remembered_video_options(catalog: "Catalog", interval_s: float | None, max_segments: int | None
                             ) -> VideoOptions:
    """The sampling of this run: what it was given (then remembered in the catalog for later runs and
    `serve --watch`), else what an earlier run was given, else the defaults. Indexed videos keep their segments."""
    meta = catalog.meta()
    try:
        remembered = VideoOptions(float(meta.get(INTERVAL_KEY, DEFAULT_INTERVAL_S)),
                                  int(meta.get(MAX_SEGMENTS_KEY, DEFAULT_MAX_SEGMENTS)))
    except ValueError:
        remembered = VideoOptions()
    options = VideoOptions(remembered.interval_s if interval_s is None else float(interval_s),
                           remembered.max_segments if max_segments is None else int(max_segments))
    if options != remembered:
        catalog.set_meta({INTERVAL_KEY: str(options.interval_s), MAX_SEGMENTS_KEY: str(options.max_segments)})
    return options


@dataclass
class VideoSamples:
    """What a worker hands over for one video: its facts and metadata, and either reused segments or samples."""

    facts: VideoFacts
    metadata: ImageMetadata
    reused: ReusableVideo | None = None
    times: list[float] = field(default_factory=list)
    crops: np.ndarray | None = None  # (n, H, W, 3) uint8, the model's crops of the sampled frames
    signatures: list[np.ndarray] = field(default_factory=list)
    thumbnails: list[bytes] = field(default_factory=list)  # one JPEG per sample; the segments' frames are kept


@dataclass
class VideoOutcome:
    size: int = 0
    mtime_ns: int = 0
    content_hash: bytes = b""
    samples: VideoSamples | None = None
    error: str | None = None
    vanished: bool = False


def prepare_video(path: bytes, catalog: "Catalog", cfg: PreprocessConfig, options: VideoOptions) -> VideoOutcome:
    """Everything the encoder and the catalog need for one video; a bad video is an `error` (a skipped line)."""
    try:
        size, mtime_ns = _regular_file(path)
        content_hash = video_content_hash(path, size)
    except FileNotFoundError as exc:
        return VideoOutcome(error=exc.strerror or "file not found", vanished=True)
    except (OSError, ValueError) as exc:
        return VideoOutcome(error=getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
    outcome = VideoOutcome(size, mtime_ns, content_hash)
    if size == 0:
        outcome.error = "empty file"
        return outcome
    try:
        outcome.samples = _samples(path, catalog.reusable_video(content_hash), cfg, options)
    except VideoDecodeError as exc:
        outcome.error = str(exc)
    if outcome.samples is not None:
        outcome.samples.metadata = outcome.samples.metadata.with_mtime_fallback(mtime_ns)
    return outcome


def _regular_file(path: bytes) -> tuple[int, int]:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    return info.st_size, info.st_mtime_ns


def _samples(path: bytes, reused: ReusableVideo | None, cfg: PreprocessConfig, options: VideoOptions) -> VideoSamples:
    with open_video(path) as container:
        info = probe(container)
        samples = VideoSamples(VideoFacts(info.duration_s, info.fps, info.codec), info.metadata, reused)
        if reused is not None and reused.segments:
            return samples  # a moved or copied video: its segments are known, only its header was read
        times = sample_times(info.duration_s, options.interval_s, options.max_segments)
        crops = []
        for frame in sample_frames(container, info, times):
            samples.times.append(frame.time_s)
            crops.append(crop_for_model(frame.image, cfg))
            samples.signatures.append(pixel_signature(frame.image))
            samples.thumbnails.append(_thumbnail(frame.image))
    samples.crops = np.stack(crops)
    return samples


def _thumbnail(image) -> bytes:
    from PIL import Image

    small = image.resize(fitted_size(image.size, THUMBNAIL_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return encode_jpeg(small, THUMBNAIL_QUALITY)
