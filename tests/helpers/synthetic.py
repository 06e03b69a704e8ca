"""Libraries of planted embeddings (no model, no decode): for tests whose relevant set is known by construction."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from indexer.catalog.store import BatchWrite, Catalog, StoredImage


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def planted_library(folder: Path, vectors: np.ndarray, batch: int = 2000) -> list[int]:
    """A library at `folder` whose images are empty files holding `vectors` (in order); returns their ids."""
    files = folder / "files"
    files.mkdir(parents=True)
    catalog = Catalog.create(folder / "catalog.sqlite", {"model": "synthetic", "pretrained": "none",
                                                         "dim": str(vectors.shape[1])})
    for start in range(0, len(vectors), batch):
        stored = []
        for n in range(start, min(start + batch, len(vectors))):
            path = files / f"{n:07d}.jpg"
            path.write_bytes(b"")
            digest = hashlib.blake2b(vectors[n].tobytes(), digest_size=16).digest()
            stored.append(StoredImage(str(path).encode(), 0, 0, digest, vectors[n]))
        catalog.apply(BatchWrite(stored=stored))
    with catalog.read() as conn:
        ids = [int(r[0]) for r in conn.exec_driver_sql("SELECT id FROM images ORDER BY id")]
    catalog.close()
    return ids
