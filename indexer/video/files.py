"""Which files are videos, and a content identity for them that reads a few MiB, not the whole file."""
from __future__ import annotations

import os

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".3gp", ".mkv", ".webm", ".avi"})

HEAD_BYTES = TAIL_BYTES = 1 << 20
CHUNK_BYTES = 64 << 10
CHUNKS = 16
# At or below this size the whole file is hashed: sampling would read most of it anyway.
WHOLE_FILE_BYTES = HEAD_BYTES + TAIL_BYTES + CHUNKS * CHUNK_BYTES


def is_video_name(name: bytes) -> bool:
    """Whether a file name (bytes, any case) has a video extension."""
    ext = os.path.splitext(name)[1]
    return ext.decode("ascii", "replace").lower() in VIDEO_EXTENSIONS


def video_content_hash(path: bytes, size: int) -> bytes:
    """A 16-byte blake2b identity of a video: its size, first and last MiB and 16 evenly spaced 64 KiB chunks.

    Safe as an identity because the parts that describe every sample lie in what is hashed: an MP4/MOV's moov
    (its sample table holds each sample's size and offset, so any re-encode or edit changes it) sits at the start
    or the end, as do MKV/WebM's headers and cues; the size pins the rest. The identity only decides moves,
    copies and duplicate groups; a file changed in place is re-cut anyway because its size or mtime differ.
    Files up to WHOLE_FILE_BYTES are hashed whole. OSError propagates as is.
    """
    import hashlib  # here: a query imports this module for is_video_name alone (OpenSSL's init is ~4 ms)

    digest = hashlib.blake2b(digest_size=16)
    digest.update(size.to_bytes(8, "little", signed=False))
    # O_NONBLOCK: a FIFO swapped in after the scan must not hang the run.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        for offset, length in _spans(size):
            digest.update(os.pread(fd, length, offset))
    finally:
        os.close(fd)
    return digest.digest()


def _spans(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the parts hashed, in file order."""
    if size <= WHOLE_FILE_BYTES:
        return [(start, min(HEAD_BYTES, size - start)) for start in range(0, max(size, 1), HEAD_BYTES)]
    middle_start, middle_end = HEAD_BYTES, size - TAIL_BYTES - CHUNK_BYTES
    step = (middle_end - middle_start) / (CHUNKS - 1)
    chunks = [(middle_start + round(i * step), CHUNK_BYTES) for i in range(CHUNKS)]
    return [(0, HEAD_BYTES), *chunks, (size - TAIL_BYTES, TAIL_BYTES)]
