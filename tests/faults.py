"""Fault-injection helpers: the real CLI in its own process group, SIGKILL at chosen moments, library checks."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from images import photo

_SCRIPT = Path(sys.executable).with_name("searchengine")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "searchengine"]
SMALL = (48, 32)


def make_photos(folder: Path, count: int, first_seed: int = 1000) -> list[Path]:
    """`count` distinct small PNGs (named by seed), a few in a subfolder; returns their paths."""
    paths = []
    for n in range(count):
        path = folder / ("sub" if n % 5 == 4 else "") / f"p{n + first_seed - 1000:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(first_seed + n, SMALL).save(path)
        paths.append(path)
    return paths


def cli(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the real CLI to completion."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def start(*args: object, log: Path) -> subprocess.Popen:
    """Start the real CLI in a new session (its own process group, decode workers included); output to files."""
    out, err = open(log.with_suffix(".out"), "wb"), open(log.with_suffix(".err"), "wb")
    try:
        return subprocess.Popen([*CLI, *map(str, args)], stdout=out, stderr=err, start_new_session=True)
    finally:
        out.close()
        err.close()


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
    """path -> (id, seq) of every indexed image, read from the last committed state ({} before there is one)."""
    path = library / "catalog.sqlite"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {p: (i, s) for p, i, s in conn.execute("SELECT path, id, seq FROM images")}
    except sqlite3.OperationalError:
        return {}  # being created: no tables yet
    finally:
        conn.close()


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

    path = library / "catalog.sqlite"
    if path.exists():
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    if (library / "vectors.faiss").exists():
        VectorIndex.load(library / "vectors.faiss")  # atomic saves: never a half-written file


def saved_states(library: Path) -> str:
    """Which catalog state the index file reflects, against the catalog's: where in a run a kill landed."""
    from indexer.vectors.index import VectorIndex

    path = library / "catalog.sqlite"
    if not path.exists():
        return "no catalog"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        seq = conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0]
    except sqlite3.OperationalError:
        return "catalog being created"
    finally:
        conn.close()
    index = VectorIndex.load(library / "vectors.faiss").seq if (library / "vectors.faiss").exists() else None
    tower = "text tower" if (library / "text_tower").exists() else "no text tower"
    return f"catalog state {seq}, index file {index}, {tower}"


def status_images(library: Path) -> int:
    from searchengine.library.api import Library

    lib = Library.open(library, notice=lambda _: None)
    try:
        return lib.status().images
    finally:
        lib.close()


def check_complete(library: Path, files: list[Path], failed: int) -> None:
    """Every readable file exactly once: counts, listings and image-to-itself search."""
    from searchengine.library.api import Library

    notices: list[str] = []
    lib = Library.open(library, notice=notices.append)
    try:
        status = lib.status()
        assert (status.images, status.failed) == (len(files), failed)
        listed = [h.path for h in lib.search(text="a photo", limit=1000)]
        assert len(listed) == len(set(listed)), "a path appears twice"
        assert sorted(listed) == sorted(map(str, files))
        for path in files:
            hits = lib.search(image=str(path), limit=3)
            assert hits[0].path == str(path), (path, hits)
            assert len({h.path for h in hits}) == len(hits)
    finally:
        lib.close()


def assert_clear_winner(hits: list[dict]) -> None:
    """The first hit wins on its score, not on tie order: its lead over the runner-up is a real share of the
    runner-up's distance from a perfect match (a random model makes photos alike, so near-ties happen)."""
    first, second = hits[0]["score"], hits[1]["score"]
    assert first - second > 0.2 * (1 - second), (first, second)


def run(*args: object, ok: bool = True):
    """The CLI in this process (click's runner): never a traceback; exit 0 unless `ok` is False."""
    from click.testing import CliRunner

    from searchengine.cli.main import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.stderr
    if ok:
        assert result.exit_code == 0, (result.output, result.stderr)
    return result


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def summary_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)
