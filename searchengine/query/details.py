"""What the API says about one image: `ImageDetails` (for `show`) and the metadata carried by search hits."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone

from indexer.catalog.images import ImageRecord
from indexer.images.metadata import ImageMetadata


@dataclass
class ImageDetails:
    """One image's catalog record; metadata fields are None when unknown (or not read yet)."""

    id: int
    path: str
    size: int
    mtime: str  # ISO 8601, UTC
    indexed_at: str  # ISO 8601, UTC
    content_hash: str  # BLAKE2b-128, hex
    width: int | None
    height: int | None
    format: str | None
    taken_at: str | None  # ISO 8601: with its offset when known, else the local wall-clock time
    taken_at_source: str | None  # exif, xmp, exif-digitized, exif-datetime (maybe -local), quicktime, container, mtime
    camera: str | None
    make: str | None
    model: str | None
    lens: str | None
    latitude: float | None
    longitude: float | None
    metadata_read: bool  # False for rows indexed before metadata was stored, until the next index run
    kind: str = "image"  # or "video"; then the video's facts and the moment this id is (by path: the first)
    duration_s: float | None = None
    fps: float | None = None
    codec: str | None = None
    segments: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    frame_s: float | None = None
    text: str | None = None  # the text read in it (index --ocr), a line each; "" read without text; None not read
    text_lines: list[dict] | None = None  # those lines with their confidence and box (TextLine)

    @classmethod
    def from_record(cls, rec: ImageRecord, segments: int | None = None) -> "ImageDetails":
        meta = rec.metadata
        return cls(rec.id, os.fsdecode(rec.path), rec.size, _utc_iso(rec.mtime_ns / 1e9), _utc_iso(rec.indexed_at),
                   rec.content_hash.hex(), meta.width, meta.height, meta.format, taken_at_text(meta),
                   meta.taken_at_source, camera_text(meta), meta.make, meta.model, meta.lens, meta.latitude,
                   meta.longitude, rec.metadata_read, rec.kind, rec.duration_s, rec.fps, rec.codec, segments,
                   rec.start_s, rec.end_s, rec.frame_s)


def taken_at_text(meta: ImageMetadata) -> str | None:
    """The capture time as the user would read it: local wall clock, with its offset when known."""
    if meta.taken_at_local is None:
        return None
    return meta.taken_at_local + (meta.taken_at_offset or "")


def camera_text(meta: ImageMetadata) -> str | None:
    """Make and model in one name, without repeating the make ("Canon EOS R5", not "Canon Canon EOS R5")."""
    make, model = meta.make, meta.model
    if make and model:
        return model if model.lower().startswith(make.split()[0].lower()) else f"{make} {model}"
    return model or make


def _utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
