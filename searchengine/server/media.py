"""Bytes the server hands out for one catalog id: the original, its thumbnail, its preview, its size.

Nothing here takes a path from a request: an id becomes the catalog's path, and the file is served only
while it is what was indexed (same size and mtime; the original also the same content hash).
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from indexer.catalog.images import ImageRecord as CatalogRecord
from indexer.errors import ImageNotFoundError
from indexer.images.files import MAX_FILE_BYTES, read_file
from indexer.images.thumbnails import cache_path, render, write_atomically

DIMENSIONS_CACHED = 200_000


@dataclass
class CachedFile:
    path: Path
    etag: str


def unchanged(row: CatalogRecord) -> bool:
    """The file is still there with the size and mtime it had when indexed."""
    try:
        info = os.stat(row.path)
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(info.st_mode) and (info.st_size, info.st_mtime_ns) == (row.size, row.mtime_ns)


def _gone(row: CatalogRecord) -> ImageNotFoundError:
    return ImageNotFoundError(f"image {row.id} is gone or changed since it was indexed")


def original_bytes(row: CatalogRecord) -> bytes:
    """The file's bytes, only if they are exactly the indexed content (hash checked)."""
    if not unchanged(row) or row.size > MAX_FILE_BYTES:
        raise _gone(row)
    try:
        data, _, _ = read_file(row.path)
    except (OSError, ValueError):
        raise _gone(row) from None
    if hashlib.blake2b(data, digest_size=16).digest() != row.content_hash:
        raise _gone(row)
    return data


def media_type(data: bytes) -> str:
    """The content type from the bytes themselves, never from the file name."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return Image.MIME.get(img.format or "", "application/octet-stream")
    except Exception:  # noqa: BLE001 - the type is a hint; unknown bytes are sent as a download
        return "application/octet-stream"


def cached_render(library: Path, row: CatalogRecord, kind: str) -> CachedFile:
    """The cached thumbnail or preview of an unchanged file, made now if missing (libraries made before)."""
    if not unchanged(row):
        raise _gone(row)
    target = cache_path(library, kind, row.content_hash)
    if not _nonempty(target):
        from indexer.images.decode import ImageDecodeError

        try:
            write_atomically(target, render(original_bytes(row), kind))
        except ImageDecodeError:
            raise ImageNotFoundError(f"image {row.id} cannot be decoded any more") from None
    return CachedFile(target, f'"{kind[0]}-{row.content_hash.hex()}"')


def _nonempty(path: Path) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


class Dimensions:
    """Upright width and height per content hash: catalog metadata when present, else the file's header."""

    def __init__(self) -> None:
        self._cache: OrderedDict[bytes, tuple[int, int]] = OrderedDict()

    def get(self, path: bytes, content_hash: bytes, known: tuple[object, object] = (None, None)) -> tuple[int, int]:
        if isinstance(known[0], int) and isinstance(known[1], int):
            return known[0], known[1]
        cached = self._cache.get(content_hash)
        if cached is None:
            cached = _header_size(path)
            self._cache[content_hash] = cached
            if len(self._cache) > DIMENSIONS_CACHED:
                self._cache.popitem(last=False)
        return cached


def _header_size(path: bytes) -> tuple[int, int]:
    """Read only the header (no pixels); EXIF orientations 5-8 swap width and height. (0, 0) if unreadable."""
    from PIL import ExifTags, Image

    try:
        with Image.open(os.fsdecode(path)) as img:
            w, h = img.size
            orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - gone or unreadable: the size is unknown
        return 0, 0
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
