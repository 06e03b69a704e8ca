"""Reading an image file whole, once: the bytes that are hashed, decoded and stored come from one read."""
from __future__ import annotations

import os
import stat

MAX_FILE_BYTES = 1 << 30  # larger than any photo; refuse rather than hold it in memory


def read_file(path: bytes) -> tuple[bytes, int, int]:
    """The file's bytes with the size and mtime of what was actually read (it may change after the scan)."""
    # O_NONBLOCK: a FIFO swapped in after the scan must not hang the run.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"file too large ({info.st_size} bytes)")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), info.st_size, info.st_mtime_ns
    finally:
        os.close(fd)
