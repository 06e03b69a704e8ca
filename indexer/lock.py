"""The library's writer lock: one index run at a time, held by the OS (released even on SIGKILL)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock, Timeout


@contextmanager
def writer_lock(path: Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock; if another process has it, say so once and wait for it."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        on_wait(f"another index run holds {path}; waiting for it to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def try_writer_lock(path: Path) -> FileLock | None:
    """The lock if it is free now (caller releases it), else None: also where it cannot be taken at all
    (a read-only library folder), since callers only use it for optional upkeep."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        return None
    return lock
