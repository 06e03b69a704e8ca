"""How a video is written: all its segments at once, replacing every row its path had, in the batch's transaction.

A video is one row per segment in `images` (key: path and segment number), each row carrying the video's
metadata, so every filter, the vector index and its catch-up treat a moment like a photo.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from indexer.catalog.metadata import METADATA_COLUMNS, add_camera, metadata_values
from indexer.catalog.moves import MOVED
from indexer.catalog.records import StoredVideo, folder_of
from indexer.images.metadata import METADATA_VERSION

_INSERT = ("INSERT INTO images (id, path, folder, size, mtime_ns, content_hash, embedding, seq, indexed_at, segment, "
           "start_s, end_s, frame_s, duration_s, fps, codec, meta_version, " + ", ".join(METADATA_COLUMNS) + ") "
           "VALUES (" + ",".join("?" * (17 + len(METADATA_COLUMNS))) + ")")


def remove_path(conn: Any, path: bytes, seq: int) -> int:
    """Delete every row of `path` (a photo's one, a video's segments), recorded in `removed`; how many."""
    ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM images WHERE path=?", (path,))]
    for image_id in ids:
        conn.exec_driver_sql("INSERT OR REPLACE INTO removed (id, seq) VALUES (?, ?)", (image_id, seq))
    conn.exec_driver_sql("DELETE FROM images WHERE path=?", (path,))
    return len(ids)


def _claimed_ids(conn: Any, video: StoredVideo) -> tuple[list[int | None], int]:
    """The ids of the gone video this one moved from, per segment, and how many rows left `images` for it."""
    fresh: list[int | None] = [None] * len(video.segments)
    if video.moved_from is None:
        return fresh, 0
    key = (video.moved_from, video.content_hash)
    if video.moved_kind == MOVED:  # its rows are still in images, under a path whose file is gone
        if os.path.exists(video.moved_from):
            return fresh, 0  # the old file came back since it was checked: this is a copy
        rows = conn.exec_driver_sql("SELECT id, segment FROM images WHERE path=? AND content_hash=?", key).fetchall()
        conn.exec_driver_sql("DELETE FROM images WHERE path=? AND content_hash=?", key)
        taken = len(rows)
    else:
        rows = conn.exec_driver_sql("SELECT id, segment FROM vanished WHERE path=? AND content_hash=?", key).fetchall()
        conn.exec_driver_sql("DELETE FROM vanished WHERE path=? AND content_hash=?", key)
        taken = 0
    by_segment = {int(s): int(i) for i, s in rows}
    ids = [by_segment.get(s.segment) for s in video.segments]
    in_use = {r[0] for r in conn.exec_driver_sql(
        "SELECT id FROM images WHERE id IN (SELECT value FROM json_each(?))", (str([i for i in ids if i]),))}
    return [None if i in in_use else i for i in ids], taken


def store_video(conn: Any, video: StoredVideo, seq: int, now: float) -> int:
    """Replace the rows of `video.path` with its segments; returns the change in the row count."""
    before = remove_path(conn, video.path, seq)
    meta = metadata_values(video.metadata) if video.metadata else (None,) * len(METADATA_COLUMNS)
    version = METADATA_VERSION if video.metadata else None
    facts = video.facts
    reuse, taken = _claimed_ids(conn, video)
    for segment, reuse_id in zip(video.segments, reuse):
        blob = np.ascontiguousarray(segment.embedding, dtype=np.float32).tobytes()
        conn.exec_driver_sql(_INSERT, (
            reuse_id, video.path, folder_of(video.path), video.size, video.mtime_ns, video.content_hash, blob, seq,
            now, segment.segment, segment.start_s, segment.end_s, segment.frame_s, facts.duration_s, facts.fps,
            facts.codec, version, *meta))
    add_camera(conn, video.metadata)
    conn.exec_driver_sql("DELETE FROM failures WHERE path=?", (video.path,))
    return len(video.segments) - before - taken
