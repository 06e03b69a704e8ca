"""Bytes the server hands out for one catalog id: the original, its thumbnail, its preview, its size.

Nothing here takes a path from a request: an id becomes the catalog's path, and the file is served only
while it is what was indexed (same size and mtime; the original also the same content hash).

A video (one catalog row per moment) is streamed from an open file in chunks, never read whole, and answers
HTTP Range requests so a player can seek; its identity is `video_content_hash` (a few MiB read, once per
file version: see `VerifiedVideos`). A moment's thumbnail and preview are those of its frame (`frame_s`),
cached under `frame_cache_key`; one missing is decoded from the video then.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from indexer.catalog.images import ImageRecord as CatalogRecord
from indexer.errors import ImageNotFoundError
from indexer.images.files import MAX_FILE_BYTES, read_file
from indexer.images.thumbnails import (PREVIEW_QUALITY, PREVIEW_SIZE, THUMBNAIL_QUALITY, THUMBNAIL_SIZE, cache_path,
                                       encode_jpeg, frame_cache_key, render, write_atomically)

DIMENSIONS_CACHED = 200_000
VIDEO_TYPES = {"mp4": "video/mp4", "m4v": "video/mp4", "mov": "video/quicktime", "3gp": "video/3gpp",
               "mkv": "video/x-matroska", "webm": "video/webm", "avi": "video/x-msvideo"}
VERIFIED_KEPT = 4096  # file versions whose video_content_hash was checked (one check per version, not per Range)
FRAME_DECODES = 2  # at most this many frames decoded at once for missing thumbnails and previews (2 cores)
FIRST_FRAME_S = 10.0  # a request decoding a missing frame waits at most about this long for the video to open
FRAME_BUDGET_S = 20.0  # and at most about this long for the frame itself (a keyframe seek, then one GOP at most)


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
    """The cached thumbnail or preview of an unchanged file, made now if missing (libraries made before; a
    video's previews, which `index` does not make)."""
    if not unchanged(row):
        raise _gone(row)
    if row.kind == "video":
        key = frame_cache_key(row.content_hash, row.frame_s or 0.0)
        target = cache_path(library, kind, key)
        if not _nonempty(target):
            write_atomically(target, _frame_jpeg(row, kind))
        return CachedFile(target, f'"{kind[0]}-{key.hex()}"')
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


# --- videos ----------------------------------------------------------------------------------------------------
def video_type(row: CatalogRecord) -> str:
    """The content type of a video by its container (the indexed file's extension, else its format)."""
    ext = os.path.splitext(row.path)[1].decode("ascii", "replace").lower().lstrip(".")
    return VIDEO_TYPES.get(ext) or VIDEO_TYPES.get((row.metadata.format or "").lower(), "application/octet-stream")


@dataclass
class OpenVideo:
    """An open file descriptor on the indexed video, checked to be it; the caller closes `fd`."""

    fd: int
    size: int
    etag: str
    last_modified: str


class VerifiedVideos:
    """File versions already checked against their catalog hash, so a player's many Range requests hash once.

    A version is (device, inode, size, mtime, ctime): writing to a file or setting its mtime back changes its
    ctime, which no user can set, so a version seen once is the same bytes until one of them changes."""

    def __init__(self, kept: int = VERIFIED_KEPT) -> None:
        self._seen: OrderedDict[tuple, bytes] = OrderedDict()
        self._kept = kept
        self._lock = threading.Lock()

    def matches(self, version: tuple, content_hash: bytes, compute) -> bool:
        """Whether `version` hashes to `content_hash`: remembered, else `compute()`d (None: it could not tell,
        and nothing is remembered)."""
        with self._lock:
            known = self._seen.get(version)
            if known is not None:
                self._seen.move_to_end(version)
        if known is None:
            known = compute()
            if known is None:
                return False
            with self._lock:
                self._seen[version] = known
                if len(self._seen) > self._kept:
                    self._seen.popitem(last=False)
        return known == content_hash


VERIFIED = VerifiedVideos()


def open_video_file(row: CatalogRecord, verified: VerifiedVideos = VERIFIED) -> OpenVideo:
    """The indexed video opened for reading, only while it is what was indexed: a regular file with the same
    size and mtime, and the same `video_content_hash` (computed from the path; the inode is then checked to be
    the one opened, so a file swapped in between is refused too)."""
    from indexer.video.files import video_content_hash

    try:
        fd = os.open(row.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        raise _gone(row) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (row.size, row.mtime_ns):
            raise _gone(row)
        version = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

        def compute() -> bytes | None:
            digest = video_content_hash(row.path, row.size)
            again = os.stat(row.path)
            same = (again.st_dev, again.st_ino, again.st_size, again.st_mtime_ns, again.st_ctime_ns) == version
            return digest if same else None  # the path now names another file: this one was not hashed

        try:
            if not verified.matches(version, row.content_hash, compute):
                raise _gone(row)
        except (OSError, ValueError):
            raise _gone(row) from None
        etag = f'"v-{row.content_hash.hex()}-{row.mtime_ns:x}"'
        return OpenVideo(fd, info.st_size, etag, formatdate(row.mtime_ns / 1e9, usegmt=True))
    except BaseException:
        os.close(fd)
        raise


class Unsatisfiable(Exception):
    """The Range asks for no byte of the file (a 416)."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a `Range: bytes=...` header for a file of `size` bytes; None to send
    the whole file (no header, or one this server ignores, as RFC 9110 allows: a bad one, other units, several
    ranges). `Unsatisfiable` when the range starts past the end, or is an empty suffix."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == "") or not (first or last):
        return None
    if not (first.isascii() and last.isascii()) or len(first) > 20 or len(last) > 20:
        return None
    if first == "":  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - count), size - 1
    start = int(first)
    end = size - 1 if last == "" else int(last)
    if last != "" and end < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)


def _frame_jpeg(row: CatalogRecord, kind: str) -> bytes:
    """The JPEG of a moment's frame, decoded from the (checked) video now; at most FRAME_DECODES at once."""
    from indexer.video.frames import sample_frames
    from indexer.video.probe import VideoDecodeError, open_video, probe

    os.close(open_video_file(row).fd)  # the file is still the indexed one: refused (404) otherwise
    bound, quality = (THUMBNAIL_SIZE, THUMBNAIL_QUALITY) if kind == "thumbnail" else (PREVIEW_SIZE, PREVIEW_QUALITY)
    with _FRAME_SLOTS:
        try:
            with open_video(row.path) as container:
                info = probe(container, FIRST_FRAME_S)
                frames = sample_frames(container, info, [row.frame_s or 0.0], max_side=bound,
                                       time_budget_s=FRAME_BUDGET_S, first_frame_s=FIRST_FRAME_S,
                                       slack=0.0)  # the very frame index sampled, not a nearby keyframe
                try:
                    frame = next(frames, None)
                finally:
                    frames.close()
        except VideoDecodeError:
            frame = None
    if frame is None:
        raise ImageNotFoundError(f"image {row.id} cannot be decoded any more")
    return encode_jpeg(frame.image, quality)  # already RGB, within `bound` (FFmpeg scaled it to max_side)


_FRAME_SLOTS = threading.BoundedSemaphore(FRAME_DECODES)
