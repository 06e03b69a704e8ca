"""Filtered vector search: the top k among the images that match the filters, never fewer than k when k match.

The matches are counted in SQL. Few matches are scored exactly from their stored embeddings. More are searched
in the vector index restricted to them (a faiss IDSelector), widening the IVF cells scanned until k are found.
When the matches are too many to list cheaply, the index's unrestricted ranking is read deep enough to hold
k matches, which are then checked against the filters in SQL: the first k matches of a ranking are the top k
of the matching set. IVF candidates are re-scored exactly, as in an unfiltered search, and a filtered query
probes more IVF cells than an unfiltered one (see MIN_PROBE_BOOST): its best matches lie deeper in the ranking.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import numpy as np

from indexer.catalog.matching import count_matching, embeddings_for, matching_ids, which_match

if TYPE_CHECKING:
    from indexer.catalog.store import Catalog
    from indexer.vectors.index import VectorIndex
    from searchengine.query.filters import SearchFilters

# Up to this many matches, exact scores from the catalog's embeddings beat the index (each is a B-tree read of a
# 2 KB row: 1000 measured 10-35 ms on the busy 2-core box, against 1-3 ms for an index search restricted to them).
EXACT_MATCHES = 256
# Up to this many matches, list them and search the index restricted to them; beyond, read its ranking deeper.
LISTED_MATCHES = 30_000
DEEPER_ROUNDS = 4  # each reads the ranking 4x deeper; then the matches are listed after all
# The best k of a share s of the images sit about as deep as the best k/s of all, which lie in more IVF cells:
# cells probed = nprobe * max(MIN_PROBE_BOOST, 1 / sqrt(s)). Measured at 100k (recall@20 against exact over the
# matches): 1%: 0.67 unboosted, 0.995 at 8x; 10%: 0.87, 0.965 at 2x, 1.0 at 4x; 50%: 0.94, 0.985 at 2x.
MIN_PROBE_BOOST = 2.0
Ranked = tuple[np.ndarray, np.ndarray]  # (scores float32, ids int64), best first


def filtered_search(catalog: "Catalog", index: Callable[[], "VectorIndex | None"], query: np.ndarray, limit: int,
                    filters: "SearchFilters", dim: int, exact: bool = False) -> Ranked:
    """The best `limit` matching images for `query` (shape (dim,)); `index` gives the current vector index."""
    where, params = filters.sql(catalog)
    if exact:
        return exact_among(catalog, query, matching_ids(catalog, where, params), dim, limit)
    count = count_matching(catalog, where, params, cap=LISTED_MATCHES + 1)  # exact up to LISTED_MATCHES
    if count <= EXACT_MATCHES:
        return exact_among(catalog, query, matching_ids(catalog, where, params), dim, limit)
    vectors = index()
    if vectors is None:  # no usable index yet (readers never build a large one): exact, slower but right
        return exact_among(catalog, query, matching_ids(catalog, where, params), dim, limit)
    total = max(vectors.ntotal, 1)
    if count <= LISTED_MATCHES:
        return _restricted(catalog, vectors, query, matching_ids(catalog, where, params), limit, dim,
                           _boosted_nprobe(vectors, count / total))
    # Many match, at least the share counted: reading the ranking as deep as that share calls for finds the
    # matches of any larger share too, and probing the cells it calls for keeps their recall (measured at 1M:
    # counting half the catalog took 40-160 ms a query, more than this deeper read costs).
    share = count / total
    nprobe = _boosted_nprobe(vectors, share)
    ranked = _deeper(catalog, vectors, query, limit, where, params, dim, share, nprobe)
    if ranked is not None:
        return ranked
    return _restricted(catalog, vectors, query, matching_ids(catalog, where, params), limit, dim, nprobe)


def exact_among(catalog: "Catalog", query: np.ndarray, ids: np.ndarray, dim: int, limit: int) -> Ranked:
    """Brute force over the stored embeddings of `ids`."""
    found, vectors = embeddings_for(catalog, ids, dim)
    scores = vectors @ np.asarray(query, np.float32).reshape(dim)
    top = np.argsort(-scores, kind="stable")[:limit]
    return scores[top].astype(np.float32), found[top]


def _boosted_nprobe(index: "VectorIndex", share: float) -> int:
    if index.kind == "flat":
        return 0
    share = min(1.0, share)
    return min(index.nlist, math.ceil(index.nprobe * max(MIN_PROBE_BOOST, 1 / math.sqrt(max(share, 1e-9)))))


def _restricted(catalog: "Catalog", index: "VectorIndex", query: np.ndarray, ids: np.ndarray, limit: int,
                dim: int, nprobe: int) -> Ranked:
    """Search the index over `ids` only, scanning more IVF cells until enough candidates come back (twice an
    unfiltered search's on IVF: the matches' codes sit among far more others, and each re-scored one is a blob
    read of ~20 us)."""
    want = min(index.candidates(limit) * (1 if index.kind == "flat" else 2), len(ids))
    while True:
        _, found = index.search_among(query.reshape(1, dim), want, ids, nprobe)
        found = found[0][found[0] >= 0]
        if len(found) >= want or index.kind == "flat" or nprobe >= index.nlist:
            break
        nprobe = min(index.nlist, 2 * nprobe)  # the nearest matches lie in cells not scanned yet
    return exact_among(catalog, query, found, dim, limit)


def _deeper(catalog: "Catalog", index: "VectorIndex", query: np.ndarray, limit: int, where: str, params: tuple,
            dim: int, share: float, nprobe: int) -> Ranked | None:
    """The index's own ranking, read deep enough to hold the wanted matches; None if the cells run out first."""
    want = index.candidates(limit)
    total = max(index.ntotal, 1)
    depth = min(total, math.ceil(2 * want / max(share, 1e-9)))  # about twice `want` matches, if spread evenly
    for _ in range(DEEPER_ROUNDS):
        _, found = index.search_among(query.reshape(1, dim), depth, None, nprobe)
        found = found[0][found[0] >= 0]
        matching = set(which_match(catalog, found, where, params).tolist())
        ranked = [i for i in found.tolist() if i in matching]
        if len(ranked) >= want:  # all the matches read (about 2 * want) are re-scored: a few more blob reads
            return exact_among(catalog, query, np.array(ranked[:2 * want], np.int64), dim, limit)
        if len(found) < depth or depth >= total:
            return None
        depth = min(total, depth * 4)
    return None
