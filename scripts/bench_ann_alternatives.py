"""The index the product uses (IVF-SQ8, re-ranked) against the alternatives it was chosen over: IVF-PQ and HNSW-SQ8.

Same synthetic CLIP-like vectors and text-like queries as bench_search.py (benchlib.synthetic), recall@10 against
exact search, bytes per vector (serialised index / N; the product's: its saved index file / N), build time. IVF-PQ is measured before and after exact
re-ranking of 200 candidates (the product would read each from SQLite); HNSW-SQ8 at two search depths.
The last line printed is JSON. Sizes that fit a few minutes on 2 cores: the default 100k.

    .venv/bin/python scripts/bench_ann_alternatives.py [--vectors 100000] [--queries 500]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
from benchlib import K, recall_at_k, synthetic

PQ_BYTES = 64
PQ_RERANK = 200
HNSW_M = 32


def _bytes_per_vector(index, n: int) -> float:
    import faiss

    return float(len(faiss.serialize_index(index))) / n


def product_ivf(vectors: np.ndarray, queries: np.ndarray) -> dict:
    """The product's VectorIndex (IVF-SQ8, nprobe by its policy), re-ranked exactly from the float32 vectors;
    its bytes per vector are its saved file's."""
    from indexer.vectors.index import IVF_SQ8, VectorIndex

    started = time.perf_counter()
    index = VectorIndex.build(vectors.shape[1], np.arange(len(vectors)), vectors, kind=IVF_SQ8)
    build_s = time.perf_counter() - started
    _, found = index.search(queries, K, rerank=vectors.__getitem__)
    with tempfile.TemporaryDirectory() as folder:
        index.save(Path(folder) / "vectors.faiss")
        file_bytes = (Path(folder) / "vectors.faiss").stat().st_size
    return {"found": found, "build_s": build_s, "bytes_per_vector": file_bytes / len(vectors),
            "kind": f"{index.kind} nlist={index.nlist} nprobe={index.nprobe}", "nlist": index.nlist,
            "nprobe": index.nprobe}


def ivf_pq(vectors: np.ndarray, queries: np.ndarray, nlist: int, nprobe: int) -> dict:
    import faiss

    dim = vectors.shape[1]
    started = time.perf_counter()
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, PQ_BYTES, 8, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), nlist * 50), replace=False)
    index.train(vectors[sample])
    index.add(vectors)
    build_s = time.perf_counter() - started
    index.nprobe = nprobe
    _, plain = index.search(queries, K)
    _, candidates = index.search(queries, PQ_RERANK)
    exact = np.einsum("qkd,qd->qk", vectors[np.maximum(candidates, 0)], queries)
    exact[candidates < 0] = -np.inf
    reranked = np.take_along_axis(candidates, np.argsort(-exact, axis=1)[:, :K], axis=1)
    return {"found": plain, "found_reranked": reranked, "build_s": build_s,
            "bytes_per_vector": _bytes_per_vector(index, len(vectors))}


def hnsw_sq8(vectors: np.ndarray, queries: np.ndarray, depths: tuple[int, ...] = (64, 256)) -> dict:
    import faiss

    started = time.perf_counter()
    index = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    build_s = time.perf_counter() - started
    found = {}
    for depth in depths:
        index.hnsw.efSearch = depth
        found[depth] = index.search(queries, K)[1]
    return {"found": found, "build_s": build_s, "bytes_per_vector": _bytes_per_vector(index, len(vectors))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args(argv)
    from indexer.vectors.index import VectorIndex

    vectors, queries = synthetic(args.vectors, args.queries)
    _, exact = VectorIndex.build(vectors.shape[1], np.arange(len(vectors)), vectors, kind="flat").search(queries, K)
    ours = product_ivf(vectors, queries)
    pq = ivf_pq(vectors, queries, ours["nlist"], ours["nprobe"])
    hnsw = hnsw_sq8(vectors, queries)
    summary = {
        "n": args.vectors, "queries": args.queries, "product": ours["kind"],
        "ivf_sq8_recall": round(recall_at_k(ours["found"], exact), 4),
        "ivf_sq8_bytes_per_vector": round(ours["bytes_per_vector"], 1), "ivf_sq8_build_s": round(ours["build_s"], 1),
        "ivf_pq_recall": round(recall_at_k(pq["found"], exact), 4),
        f"ivf_pq_recall_rerank_{PQ_RERANK}": round(recall_at_k(pq["found_reranked"], exact), 4),
        "ivf_pq_bytes_per_vector": round(pq["bytes_per_vector"], 1), "ivf_pq_build_s": round(pq["build_s"], 1),
        "hnsw_sq8_recall": {str(d): round(recall_at_k(f, exact), 4) for d, f in hnsw["found"].items()},
        "hnsw_sq8_bytes_per_vector": round(hnsw["bytes_per_vector"], 1), "hnsw_sq8_build_s": round(hnsw["build_s"], 1),
    }
    return benchlib.emit(summary, width=32)


if __name__ == "__main__":
    main()
