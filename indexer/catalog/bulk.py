"""Catalog reads over the whole library: a fixed random sample, every embedding by chunks, content-hash groups."""
from __future__ import annotations

from typing import Iterator

import numpy as np

from indexer.catalog.reads import rows_in
from indexer.catalog.store import Catalog

_SAMPLE_CHUNK = 500  # ids drawn per read; the sample stops at the chunk that fills it (fixed: the same sample)


def sample_vectors(catalog: Catalog, n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Up to `n` stored embeddings drawn at random (the same ones every time for an unchanged catalog)."""
    with catalog.read() as conn:
        low, high, count = conn.exec_driver_sql("SELECT min(id), max(id), count(*) FROM images").fetchone()
        if not count:
            return np.empty((0, dim), np.float32)
        if count <= n:
            blobs = [r[0] for r in conn.exec_driver_sql("SELECT embedding FROM images")]
        else:
            # Ids are dense unless many rows were removed; draw twice what is needed from the id range.
            span = int(high) - int(low) + 1
            ids = np.random.default_rng(seed).choice(span, min(span, 2 * n), replace=False) + int(low)
            blobs = []
            for start in range(0, len(ids), _SAMPLE_CHUNK):
                chunk = [int(i) for i in ids[start:start + _SAMPLE_CHUNK]]
                blobs += [r[0] for r in rows_in(conn, "embedding", "id", chunk)]
                if len(blobs) >= n:
                    break
            blobs = blobs[:n]
    if not blobs:
        return np.empty((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)


def embeddings_by_chunks(catalog: Catalog, dim: int, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of every image in id order, `chunk` rows at a time.

    Each chunk is its own read (the caller may read the catalog between chunks); ids go up, so a row is
    seen once even if others are written meanwhile.
    """
    last = -1
    while True:
        with catalog.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT id, embedding FROM images WHERE id > ? ORDER BY id LIMIT ?", (last, chunk)).fetchall()
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        yield ids, np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), dim)
        last = int(ids[-1])


def same_content_groups(catalog: Catalog) -> list[list[int]]:
    """Ids of files sharing a content hash (byte-identical files), one list per hash held more than once; a
    video counts once (by its first segment), so its own moments are not copies of each other."""
    with catalog.read() as conn:
        rows = conn.exec_driver_sql("SELECT group_concat(id) FROM images WHERE segment=0 "
                                    "GROUP BY content_hash HAVING count(*) > 1").fetchall()
    return [[int(i) for i in r[0].split(",")] for r in rows]


def video_of_segments(catalog: Catalog) -> dict[int, bytes]:
    """The video path of every segment id (photos are not listed): as many entries as the library has moments."""
    with catalog.read() as conn:
        return {int(i): p for i, p in conn.exec_driver_sql("SELECT id, path FROM images WHERE start_s IS NOT NULL")}
