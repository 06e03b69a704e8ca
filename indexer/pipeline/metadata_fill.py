"""Fill in metadata for rows indexed before the catalog stored it: headers only, no decode, no re-encode."""
from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any, Sequence

from indexer.images.metadata import ImageMetadata, read_metadata
from indexer.video.files import is_video_name

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog


def fill_missing_metadata(catalog: "Catalog", roots: Sequence[bytes]) -> int:
    """Read the headers of unchanged files under `roots` whose rows lack metadata; returns how many were filled."""
    filled = 0
    last: tuple[tuple[bytes, int, int], ImageMetadata | None] | None = None  # a video's segments share a header
    for root in roots:
        for rows in catalog.rows_missing_metadata(root):
            items = []
            for image_id, path, size, mtime_ns in rows:
                if last is None or last[0] != (path, size, mtime_ns):
                    last = ((path, size, mtime_ns), header_of(path, size, mtime_ns))
                if last[1] is not None:
                    items.append((image_id, last[1]))
            catalog.write_metadata_by_id(items)  # one transaction per chunk: an interrupted run keeps its work
            filled += len(items)
    return filled


def header_of(path: bytes, size: int, mtime_ns: int) -> ImageMetadata | None:
    """The file's metadata if it is still the file the catalog describes (same size and mtime), else None."""
    try:
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (size, mtime_ns):
                return None  # changed or replaced: the next index run of its folder re-embeds it, metadata included
            meta = _video_header(path) if is_video_name(path) else _image_header(fh)
    except OSError:
        return None
    return meta.with_mtime_fallback(mtime_ns)


def _image_header(fh: Any) -> ImageMetadata:
    from PIL import Image

    try:
        with Image.open(fh) as img:  # reads the header only
            return read_metadata(img)
    except Exception:
        return ImageMetadata()


def _video_header(path: bytes) -> ImageMetadata:
    """A video's container metadata (the header and its atoms; no frame is decoded)."""
    from indexer.video.probe import VideoDecodeError, open_video, probe

    try:
        with open_video(path) as container:
            return probe(container).metadata
    except VideoDecodeError:
        return ImageMetadata()
