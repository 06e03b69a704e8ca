"""Fault injection: SIGKILL an index run (started with helpers.cli.start) at chosen moments, and check what it
left: catalog rows, SQLite's integrity, whole index files."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from helpers.catalog import catalog_path, raw_sqlite


def kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL the whole process group; True if the command was still running. Waits until the group is gone."""
    running = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return running
        time.sleep(0.05)
    raise AssertionError(f"processes of group {proc.pid} survived SIGKILL")


def catalog_rows(library: Path) -> dict[bytes, tuple[int, int]]:
    """path -> (id, seq) of every indexed image, read from the last committed state ({} before there is one).

    Read from the raw file: the catalog may be one another process is writing, or was killed writing."""
    if not catalog_path(library).exists():
        return {}
    with raw_sqlite(library, read_only=True, timeout=30) as conn:
        try:
            return {p: (i, s) for p, i, s in conn.execute("SELECT path, id, seq FROM images")}
        except sqlite3.OperationalError:
            return {}  # being created: no tables yet


def image_count(library: Path) -> int:
    return len(catalog_rows(library))


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120, poll: float = 0.02) -> bool:
    """Poll until `condition` holds (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise AssertionError("timed out waiting for the index run")


@dataclass
class Kill:
    """When to kill an index run: `after` seconds from its start, or once `committed` more of the folder's files
    are in the catalog (-1: all of them), then `extra` seconds more."""

    after: float = 0.0
    committed: int | None = None
    extra: float = 0.0

    def wait(self, proc: subprocess.Popen, progress: Callable[[], int], total: int) -> None:
        if self.committed is not None:
            target = total if self.committed < 0 else min(total, progress() + self.committed)
            if not wait_for(lambda: progress() >= target, proc):
                return
        delay = self.after + self.extra
        if delay:
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                pass


def integrity_ok(library: Path) -> None:
    """The catalog passes SQLite's own check, and a vector index file, when present, is whole."""
    from indexer.vectors.index import VectorIndex

    if catalog_path(library).exists():
        with raw_sqlite(library, read_only=True) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    if (library / "vectors.faiss").exists():
        VectorIndex.load(library / "vectors.faiss")  # atomic saves: never a half-written file


def saved_states(library: Path) -> str:
    """Which catalog state the index file reflects, against the catalog's: where in a run a kill landed."""
    from indexer.vectors.index import VectorIndex

    if not catalog_path(library).exists():
        return "no catalog"
    with raw_sqlite(library, read_only=True) as conn:
        try:
            seq = conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0]
        except sqlite3.OperationalError:
            return "catalog being created"
    index = VectorIndex.load(library / "vectors.faiss").seq if (library / "vectors.faiss").exists() else None
    tower = "text tower" if (library / "text_tower").exists() else "no text tower"
    return f"catalog state {seq}, index file {index}, {tower}"


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
