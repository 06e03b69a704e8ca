"""Durability helpers for files replaced by rename."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable; some platforms and file systems cannot open folders, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def stat_key(st: os.stat_result) -> str:
    """Inode, size, mtime and ctime (ns): what any write to a file or its replacement changes (ctime cannot be
    set back by user-level calls), so an unchanged key means the bytes last checked are still there."""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"
