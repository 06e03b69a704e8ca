"""Catalog reads for library-wide questions: a fixed random sample of embeddings."""
from __future__ import annotations

import numpy as np

from indexer.catalog import Catalog

_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit


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
            for start in range(0, len(ids), _CHUNK):
                chunk = tuple(int(i) for i in ids[start:start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                blobs += [r[0] for r in conn.exec_driver_sql(
                    f"SELECT embedding FROM images WHERE id IN ({marks})", chunk)]
                if len(blobs) >= n:
                    break
            blobs = blobs[:n]
    if not blobs:
        return np.empty((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
