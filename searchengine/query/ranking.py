"""Top-k by cosine: through the vector index, or exactly over every embedding the catalog stores."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from indexer.catalog.store import Catalog

if TYPE_CHECKING:
    from indexer.vectors.index import VectorIndex


def rank(catalog: Catalog, index: "VectorIndex | None", query: np.ndarray, k: int,
         dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids), each (1, k) best first. An ANN index probes a few cells, which may hold fewer than k
    vectors: a large k it cannot fill is answered exactly instead."""
    if index is None:
        return exact_top_k(catalog, query, k, dim)
    scores, ids = index.search(query, k, rerank=lambda wanted: catalog.vectors_for(wanted, dim))
    if int((ids[0] >= 0).sum()) < min(k, index.ntotal):
        return exact_top_k(catalog, query, k, dim)
    return scores, ids


def exact_top_k(catalog: Catalog, query: np.ndarray, k: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force over every stored embedding, a chunk at a time (memory stays bounded at millions)."""
    best_scores = np.empty(0, np.float32)
    best_ids = np.empty(0, np.int64)
    for ids, vectors in catalog.embedding_chunks(dim):
        scores = np.concatenate([best_scores, vectors @ query[0]])
        pool = np.concatenate([best_ids, ids])
        if len(scores) > k:
            keep = np.argpartition(-scores, k - 1)[:k]
            scores, pool = scores[keep], pool[keep]
        best_scores, best_ids = scores, pool
    order = np.lexsort((best_ids, -best_scores))  # ties in id order, so repeated queries agree
    return best_scores[order][None, :], best_ids[order][None, :]
