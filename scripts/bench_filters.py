"""Filtered query speed and accuracy on a synthetic library of N images (default 100k).

Usage:  .venv/bin/python scripts/bench_filters.py [--images 100000] [--queries 30] [--work .bench]

The library is built synthetically (reused between runs): CLIP-like unit embeddings and text-like queries from
benchlib.synthetic, written through the catalog's own write path (Catalog.apply) with their metadata, which is
drawn independently of the embeddings, so that each filter below matches an exact share of the images:
  date      --after/--before window holding 0.1%, 1%, 10%, 50% of the images (served by the taken_at index)
  camera    --camera on make/model substrings matching 0.1%, 1%, 10%, 50% (no index can serve a substring:
            the covering index is scanned)
Timed: Library.search_vector(query, 20, filters=...) in process, after one warm-up query, p50/p95 over the
queries (the query's text encoding, ~20-25 ms warm for ViT-B-32 per the README, comes on top). Accuracy: recall@20
against the exact search over the matching images (exact=True), on --recall-queries of them. The last line is JSON.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import benchlib
from benchlib import synthetic

from indexer.catalog.store import StoredImage
from indexer.images.metadata import ImageMetadata
from searchengine import Library, SearchFilters

DIM = 512
LIMIT = 20
SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
T0 = 1_500_000_000.0
CHUNK = 20_000


def camera_of(k: int) -> tuple[str, str]:
    """Make "Canon" for half the images; models "M" + 3 digits (k % 1000) so prefixes select 0.1%, 1%, 10%."""
    return ("Canon" if k % 2 == 0 else "Nikon"), f"M{k % 1000:03d}"


def camera_filter(share: float) -> str:
    return {0.001: "M000", 0.01: "M00", 0.1: "M0", 0.5: "canon"}[share]


def build(folder: Path, n: int, seed: int) -> np.ndarray:
    """Create the library at `folder` unless it exists; returns the query vectors."""
    vectors, queries = synthetic(n, 200, DIM, seed)
    if (folder / "complete").exists():
        return queries
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    rank = np.random.default_rng(seed + 1).permutation(n)  # date order independent of the embeddings
    paths = benchlib.stub_files(folder / "photos", n)  # searches skip results whose files are gone

    def row(k: int) -> StoredImage:
        make, model = camera_of(k)
        metadata = ImageMetadata(taken_at=T0 + 60.0 * float(rank[k]), taken_at_source="exif", width=4000,
                                 height=3000, format="jpeg", make=make, model=model)
        return StoredImage(paths[k], 1, 1, k.to_bytes(16, "little"), vectors[k], metadata=metadata)

    catalog = benchlib.synthetic_catalog(folder / "catalog.sqlite", DIM)
    benchlib.write_rows(catalog, n, row, CHUNK)
    catalog.close()
    (folder / "complete").touch()
    print(f"built {n}-image catalog in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    return queries


def date_filter(n: int, share: float) -> SearchFilters:
    begin = T0 + 60.0 * (n // 3)  # a window of exactly share * n consecutive minutes
    return SearchFilters(after=begin, before=begin + 60.0 * round(share * n))


def measure(library: Library, queries: np.ndarray, filters: SearchFilters, count: int, checked: int) -> dict:
    library.search_vector(queries[-1], LIMIT, filters=filters)  # warm-up: page cache, index loaded
    times, recalls = [], []
    for q in queries[:count]:
        start = time.perf_counter()
        hits = library.search_vector(q, LIMIT, filters=filters)
        times.append(1000 * (time.perf_counter() - start))
        if len(recalls) < checked:
            exact = {h.id for h in library.search_vector(q, LIMIT, exact=True, filters=filters)}
            recalls.append(len(exact & {h.id for h in hits}) / max(len(exact), 1))
            assert len(hits) == len(exact)
    return {**benchlib.percentiles(times), "recall": round(float(np.mean(recalls)), 4)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recall-queries", type=int, default=10,
                        help="queries whose recall@20 is checked against the exact search (default 10)")
    parser.add_argument("--work", type=Path, default=benchlib.WORK)
    args = parser.parse_args(argv)
    folder = args.work / f"filters-{args.images}"
    queries = build(folder, args.images, args.seed)
    library = Library.open(folder, notice=lambda m: print(m, file=sys.stderr))
    started = time.perf_counter()
    if library.status().index == "none":
        library.repair()  # what the index run that made a real library would have done
    print(f"index ready in {time.perf_counter() - started:.1f}s ({library.status().index})", file=sys.stderr)
    unfiltered = [library.search_vector(q, LIMIT) for q in queries[:3]]
    start = time.perf_counter()
    for q in queries[:args.queries]:
        library.search_vector(q, LIMIT)
    result: dict = {"images": args.images, "queries": args.queries, "limit": LIMIT, "unfiltered_ms": round(
        1000 * (time.perf_counter() - start) / args.queries, 2), "unfiltered_hits": len(unfiltered[0])}
    for kind, make in (("date", lambda s: date_filter(args.images, s)),
                       ("camera", lambda s: SearchFilters(camera=camera_filter(s)))):
        for share in SELECTIVITIES:
            figures = measure(library, queries, make(share), args.queries, args.recall_queries)
            result[f"{kind}_{share:g}"] = figures
            print(f"{kind:>6} {share:>6.1%}: p50 {figures['p50_ms']:7.2f} ms  p95 {figures['p95_ms']:7.2f} ms  "
                  f"recall@{LIMIT} {figures['recall']:.3f}", flush=True)
    result["worst_p50_ms"] = max(v["p50_ms"] for v in result.values() if isinstance(v, dict))
    return benchlib.emit(result)


if __name__ == "__main__":
    main()
