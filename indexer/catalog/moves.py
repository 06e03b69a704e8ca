"""Entries that follow their file: a renamed or moved photo keeps its catalog entry (id and embedding).

Two cases, both found by content hash when a new path is read:
* the old path was removed by this run (or an unfinished one) because its file vanished: the row waits in
  the `vanished` table, unsearchable, until a new path claims it or the run ends;
* the old path is still indexed but its file no longer exists (it lay outside the folders given to `index`):
  the entry is moved to the new path.
Either way the new path is stored under the old id with the old embedding, and is never listed twice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy import Connection

# Rows sharing a hash that are checked for a vanished file: copies of one photo are few.
MAX_SAME_CONTENT = 16
VANISHED = "vanished"
MOVED = "moved"


@dataclass(frozen=True)
class Claim:
    """An entry the new path takes over: `kind` is VANISHED (row waiting in `vanished`) or MOVED (row in images)."""

    kind: str
    id: int
    old_path: bytes


@dataclass
class Reusable:
    embedding: np.ndarray
    claim: Claim | None


def find_reusable(conn: Any, content_hash: bytes) -> Reusable | None:
    """An embedding for this content, and the entry to take over when its file is gone (reads only)."""
    row = conn.exec_driver_sql("SELECT id, path, embedding FROM vanished WHERE content_hash=? AND start_s IS NULL "
                               "LIMIT 1", (content_hash,)).fetchone()
    if row:
        return Reusable(_vector(row[2]), Claim(VANISHED, int(row[0]), row[1]))
    rows = conn.exec_driver_sql("SELECT id, path, embedding FROM images WHERE content_hash=? LIMIT ?",
                                (content_hash, MAX_SAME_CONTENT)).fetchall()
    if not rows:
        return None
    gone = next((r for r in rows if not os.path.exists(r[1])), None)
    claim = Claim(MOVED, int(gone[0]), gone[1]) if gone else None
    return Reusable(_vector(rows[0][2]), claim)


@dataclass
class StoredSegment:
    """One moment of a video: [start_s, end_s), shown by the frame at frame_s, whose embedding it carries
    (what the catalog stores per segment, and what a moved or copied video reuses)."""

    segment: int
    start_s: float
    end_s: float
    frame_s: float
    embedding: np.ndarray


@dataclass
class ReusableVideo:
    """The segments already cut for this content; `moved_from`: the gone video whose rows a new path takes."""

    segments: list[StoredSegment]
    moved_from: bytes | None
    moved_kind: str | None = None  # VANISHED (rows wait in `vanished`) or MOVED (rows of a gone file in images)


def find_reusable_video(conn: Any, content_hash: bytes) -> ReusableVideo | None:
    """A video's segments for this content: a vanished or gone video's (moved: the new path takes its rows),
    else a copy's."""
    columns = "segment, start_s, end_s, frame_s, embedding"
    row = conn.exec_driver_sql("SELECT path FROM vanished WHERE content_hash=? AND start_s IS NOT NULL LIMIT 1",
                               (content_hash,)).fetchone()
    if row:
        rows = conn.exec_driver_sql(f"SELECT {columns} FROM vanished WHERE content_hash=? AND path=? ORDER BY segment",
                                    (content_hash, row[0])).fetchall()
        return ReusableVideo(_segments(rows), row[0], VANISHED)
    paths = [r[0] for r in conn.exec_driver_sql(
        "SELECT DISTINCT path FROM images WHERE content_hash=? AND start_s IS NOT NULL LIMIT ?",
        (content_hash, MAX_SAME_CONTENT))]
    if not paths:
        return None
    gone = next((p for p in paths if not os.path.exists(p)), None)  # moved from outside the folders indexed
    source = gone or paths[0]
    rows = conn.exec_driver_sql(f"SELECT {columns} FROM images WHERE path=? ORDER BY segment", (source,)).fetchall()
    return ReusableVideo(_segments(rows), gone, MOVED if gone else None)


def _segments(rows: list) -> list[StoredSegment]:
    return [StoredSegment(int(s), float(a), float(b), float(f), _vector(e)) for s, a, b, f, e in rows]


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32).copy()


def stash_removed(conn: "Connection", ids: list[int]) -> None:
    """Keep removed rows claimable by a moved file until the run ends (see `forget_vanished`)."""
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        conn.exec_driver_sql(
            f"INSERT OR REPLACE INTO vanished (id, path, content_hash, embedding, segment, start_s, end_s, frame_s) "
            f"SELECT id, path, content_hash, embedding, segment, start_s, end_s, frame_s FROM images "
            f"WHERE id IN ({marks})", tuple(chunk))


def take_claim(conn: "Connection", claim: Claim | None) -> int | None:
    """The id the new path may reuse, if its claim still holds in this transaction (else a fresh row)."""
    if claim is None:
        return None
    if claim.kind == VANISHED:
        taken = conn.exec_driver_sql("DELETE FROM vanished WHERE id=?", (claim.id,)).rowcount
        in_use = conn.exec_driver_sql("SELECT 1 FROM images WHERE id=?", (claim.id,)).fetchone()
        return claim.id if taken and not in_use else None
    if os.path.exists(claim.old_path):
        return None  # the old file came back since it was checked
    taken = conn.exec_driver_sql("DELETE FROM images WHERE id=? AND path=?", (claim.id, claim.old_path)).rowcount
    return claim.id if taken else None


def forget_vanished(conn: "Connection") -> int:
    """At the end of a complete run: entries nobody claimed are gone for good."""
    return conn.exec_driver_sql("DELETE FROM vanished").rowcount
