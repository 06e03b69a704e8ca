"""Plain records the catalog reads and writes: known files, images and videos to store, failures, batches, changes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: a search need not import the index run's modules
    from indexer.catalog.moves import Claim, StoredSegment
    from indexer.images.metadata import ImageMetadata


@dataclass
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    more_ids: tuple[int, ...] = ()  # a video's other segments

    @property
    def ids(self) -> list[int]:
        """Every row of the file: one for a photo, one per segment for a video."""
        return [self.id, *self.more_ids]


@dataclass
class StoredImage:
    """One image to insert or update: a new path, or a changed one (existing_id set)."""

    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes
    embedding: np.ndarray
    existing_id: int | None = None
    claim: Claim | None = None  # the entry of a moved file this path takes over
    metadata: ImageMetadata | None = None  # None: left for the next index run's header-only pass
    no_text_by: str | None = None  # OCR's gate found no text in it: the engine's name (stored as read, no text)


@dataclass
class VideoFacts:
    duration_s: float
    fps: float | None
    codec: str | None


@dataclass
class StoredVideo:
    """One video to store whole: its rows (one per segment) replace every row its path had, in one transaction."""

    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes
    facts: VideoFacts
    segments: list[StoredSegment]
    metadata: ImageMetadata | None = None
    moved_from: bytes | None = None  # the gone video whose rows (ids and all) this path takes over
    moved_kind: str | None = None  # how it went: moves.VANISHED or moves.MOVED


@dataclass
class FailedFile:
    path: bytes
    size: int
    mtime_ns: int
    reason: str


@dataclass
class BatchWrite:
    """Everything one transaction applies: the unit that survives or vanishes whole in a crash."""

    stored: list[StoredImage] = field(default_factory=list)
    videos: list[StoredVideo] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    removed_ids: list[int] = field(default_factory=list)
    removed_failures: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        rows = len(self.stored) + sum(len(v.segments) for v in self.videos)
        return rows + len(self.failed) + len(self.removed_ids) + len(self.removed_failures)


@dataclass
class Changes:
    """What a vector index at some older seq needs to reflect `seq`: `total` is the catalog's image count then."""

    seq: int
    removed_ids: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    total: int


def folder_of(path: bytes) -> bytes:
    return os.path.dirname(path)
