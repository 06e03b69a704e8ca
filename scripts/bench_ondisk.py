"""Benchmark the on-disk IVF-SQ8 index (indexer/vectors/ondisk_ivf.py) at millions of synthetic vectors, within RAM.

Run through `scripts/bench_search.py --ondisk --vectors N` (or directly). Never holds the N x 512 float32
matrix in memory: vectors are generated a chunk at a time into a memory-mapped file under --work, exact top-10
ground truth for the queries comes from a chunked brute-force pass over that file, the index is trained once and
added shard by shard, and a separate query process (the one whose memory is reported) maps it and answers the
queries one at a time, re-ranking candidates exactly from the mapped vectors (the product reads them from the
catalog). The last line printed is one JSON object. Files under --work are removed unless --keep.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib
import numpy as np
from benchlib import DIM, K, memory_mb

FETCH = 20


def generate(n: int, q: int, work: Path, seed: int) -> tuple[np.memmap, np.ndarray]:
    """bench_search.py's CLIP-like synthetic data (benchlib.synthetic), written a chunk at a time to
    work/vectors.npy."""
    images = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    _, queries = benchlib.synthetic(n, q, DIM, seed, out=images)
    images.flush()
    del images
    np.save(work / "queries.npy", queries)
    return np.load(work / "vectors.npy", mmap_mode="r"), queries


def exact_top(vectors: np.ndarray, queries: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Exact top-K row indices per query, by brute force over `vectors` a chunk at a time."""
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.full((len(queries), K), -1, np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ np.asarray(vectors[start:start + chunk]).T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        order = np.argsort(-cand_s, axis=1)[:, :K]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


class RowReader:
    """Rows of a .npy float32 matrix read with pread, as the product reads re-rank rows from SQLite."""

    def __init__(self, path: Path):
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(fh)
            self.offset, self.width = fh.tell(), shape[1]
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, ids: np.ndarray) -> np.ndarray:
        size = 4 * self.width
        return np.stack([np.frombuffer(os.pread(self.fd, size, self.offset + int(i) * size), np.float32)
                         for i in ids])


def query_process(work: Path, nprobes: list[int]) -> dict:
    """In a fresh process: open the mapped index, answer each query alone, re-rank exactly, report."""
    from indexer.vectors.ondisk_ivf import open_ondisk

    start = time.perf_counter()
    index = open_ondisk(work / "index.faiss")
    open_s = time.perf_counter() - start
    import faiss

    faiss.omp_set_num_threads(1)
    rows = RowReader(work / "vectors.npy")  # read, not mapped: a mapping would count its read-ahead as ours
    queries, exact = np.load(work / "queries.npy"), np.load(work / "exact.npy")
    results = {}
    for nprobe in nprobes:
        index.nprobe = nprobe
        times, found = [], []
        for query in queries:
            t = time.perf_counter()
            _, ids = index.search(query[None, :], FETCH)
            candidates = ids[0][ids[0] >= 0]
            scores = rows.read(candidates) @ query
            found.append(candidates[np.argsort(-scores)[:K]])
            times.append((time.perf_counter() - t) * 1000)
        results[nprobe] = dict(recall_at_10=round(benchlib.recall_at_k(found, exact), 4),
                               **benchlib.percentiles(times))
    return dict(open_s=round(open_s, 3), by_nprobe=results, memory_mb={k: round(v) for k, v in memory_mb().items()})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=5_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--work", type=Path, default=benchlib.WORK / "ondisk")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the generated vectors and the index")
    parser.add_argument("--query-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.query_only:
        benchlib.emit(query_process(args.work, args.nprobe))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        summary = run(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    benchlib.emit(summary)


def run(args: argparse.Namespace) -> dict:
    from indexer.vectors.ondisk_ivf import build_ondisk, lists_path

    log = lambda message: print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
    t = time.perf_counter()
    vectors, queries = generate(args.vectors, args.queries, args.work, args.seed)
    log(f"generated {args.vectors} x {DIM} in {time.perf_counter() - t:.0f}s")
    t = time.perf_counter()
    np.save(args.work / "exact.npy", exact_top(vectors, queries))
    log(f"exact top-{K} of {args.queries} queries in {time.perf_counter() - t:.0f}s")
    t = time.perf_counter()
    peak = benchlib.TreeWatch(os.getpid(), interval=0.5, field="RssAnon")  # its own memory, not mapped file pages
    build_ondisk(vectors, np.arange(args.vectors), args.work / "index.faiss", progress=log)
    build_anon_mb = peak.stop().peak_mb
    build_s = time.perf_counter() - t
    log(f"built in {build_s:.0f}s")
    child = subprocess.run([sys.executable, __file__, "--query-only", "--work", str(args.work),
                            "--nprobe", *map(str, args.nprobe)], capture_output=True, text=True, check=True)
    query = json.loads(child.stdout.strip().splitlines()[-1])
    for nprobe, figures in query["by_nprobe"].items():
        log(f"nprobe {nprobe}: {figures}")
    log(f"query process memory MB: {query['memory_mb']}")
    return dict(n=args.vectors, queries=args.queries, build_s=round(build_s, 1),
                build_peak_anon_mb=round(build_anon_mb),
                lists_bytes=lists_path(args.work / "index.faiss").stat().st_size,
                bytes_per_vector=round(lists_path(args.work / "index.faiss").stat().st_size / args.vectors, 1),
                **query)


if __name__ == "__main__":
    main()
