"""Filtered vector search: the top k among the images that match the filters, never fewer than k when k match.

The matching ids come from SQL. Few matches are scored exactly from their stored embeddings. More are searched
in the vector index restricted to them (a faiss IDSelector), widening the IVF cells scanned until k are found.
When the matches are too many to list cheaply, the index's unrestricted ranking is read deep enough to hold
k matches, which are then checked against the filters in SQL: the first k matches of a ranking are the top k
of the matching set. IVF candidates are re-scored exactly, as in an unfiltered search.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np

from indexer.catalog_metadata import embeddings_for, matching_ids, which_match

if TYPE_CHECKING:
    from indexer.catalog import Catalog
    from indexer.vector_index import VectorIndex
    from searchengine.filters import SearchFilters

# Up to this many matches, exact scores from the catalog's embeddings (a few ms of blob reads) beat the index.
EXACT_MATCHES = 2000
# Up to this many matches, list them and search the index restricted to them; beyond, read its ranking deeper.
LISTED_MATCHES = 30_000
DEEPER_ROUNDS = 4  # each reads the ranking 4x deeper; then the matches are listed after all
Ranked = tuple[np.ndarray, np.ndarray]  # (scores float32, ids int64), best first


def filtered_search(catalog: "Catalog", index: Callable[[], "VectorIndex"], query: np.ndarray, limit: int,
                    filters: "SearchFilters", dim: int, exact: bool = False) -> Ranked:
    """The best `limit` matching images for `query` (shape (dim,)); `index` gives the current vector index."""
    where, params = filters.sql()
    if exact:
        return exact_among(catalog, query, matching_ids(catalog, where, params), dim, limit)
    ids = matching_ids(catalog, where, params, limit=LISTED_MATCHES + 1)
    if len(ids) <= EXACT_MATCHES:
        return exact_among(catalog, query, ids, dim, limit)
    vectors = index()
    if len(ids) <= LISTED_MATCHES:
        return _restricted(catalog, vectors, query, ids, limit, dim)
    ranked = _deeper(catalog, vectors, query, limit, where, params, dim)
    if ranked is not None:
        return ranked
    return _restricted(catalog, vectors, query, matching_ids(catalog, where, params), limit, dim)


def exact_among(catalog: "Catalog", query: np.ndarray, ids: np.ndarray, dim: int, limit: int) -> Ranked:
    """Brute force over the stored embeddings of `ids`."""
    found, vectors = embeddings_for(catalog, ids, dim)
    scores = vectors @ np.asarray(query, np.float32).reshape(dim)
    top = np.argsort(-scores, kind="stable")[:limit]
    return scores[top].astype(np.float32), found[top]


def _restricted(catalog: "Catalog", index: "VectorIndex", query: np.ndarray, ids: np.ndarray, limit: int,
                dim: int) -> Ranked:
    """Search the index over `ids` only, scanning more IVF cells until enough candidates come back."""
    want = min(index.candidates(limit), len(ids))
    nprobe = index.nprobe
    while True:
        _, found = index.search_among(query.reshape(1, dim), want, ids, nprobe)
        found = found[0][found[0] >= 0]
        if len(found) >= want or index.kind == "flat" or nprobe >= index.nlist:
            break
        nprobe = min(index.nlist, 2 * nprobe)  # the nearest matches lie in cells not scanned yet
    return exact_among(catalog, query, found, dim, limit)


def _deeper(catalog: "Catalog", index: "VectorIndex", query: np.ndarray, limit: int, where: str, params: tuple,
            dim: int) -> Ranked | None:
    """The index's own ranking, read deep enough to hold the wanted matches; None if the cells run out first."""
    want = index.candidates(limit)
    total = max(index.ntotal, 1)
    # at least LISTED_MATCHES of `total` match, so this depth holds about twice `want` matches
    depth = min(total, math.ceil(2 * want * total / LISTED_MATCHES))
    for _ in range(DEEPER_ROUNDS):
        _, found = index.search(query.reshape(1, dim), depth)
        found = found[0][found[0] >= 0]
        matching = set(which_match(catalog, found, where, params).tolist())
        ranked = [i for i in found.tolist() if i in matching]
        if len(ranked) >= want:
            return exact_among(catalog, query, np.array(ranked[:want], np.int64), dim, limit)
        if len(found) < depth or depth >= total:
            return None
        depth = min(total, depth * 4)
    return None
