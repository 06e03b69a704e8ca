"""Benchmark the vector index the library would build for N vectors against exact (flat) search.

Reports recall@10 vs exact, queries/s vs the flat index (same query batch, same threads), bytes/vector
(saved index file size / N), build/save/load time, RSS, and an estimate of re-ranking through SQLite.
The last line printed is one JSON object.

Synthetic data (default): CLIP-like image embeddings and text-like queries, benchlib.synthetic (its docstring
gives the geometry: nearest-image cosine ~0.77, best text-to-image cosine ~0.33, as with CLIP).

Then (unless --library-images 0) query latency of the real CLI on a generated ViT-B-32 library (query_latency.py):
a new process per query with a warm page cache, and with a cold one (library, packages, project source and
Python's standard library evicted first: page_cache.py), plus warm in-process queries. The index file's load is
also timed after eviction. --vectors 0 runs only the CLI latencies.

--library-segments S measures, side by side in one run, that library and the same photos plus S video moments
(JSON: "photos", "photos_and_videos", "videos_minus_photos").

    .venv/bin/python scripts/bench_search.py [--vectors N] [--queries Q] [--library-images N] [--cold-runs R]
        [--library-segments S] [--vectors-file V.npy --queries-file Q.npy --ids-out I.npy]
"""
from __future__ import annotations

import argparse
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
from benchlib import K, recall_at_k, synthetic


def load_matrix(path: Path) -> np.ndarray:
    matrix = np.ascontiguousarray(np.load(path), dtype=np.float32)
    if matrix.ndim != 2:
        sys.exit(f"{path}: expected a 2-D float32 matrix, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix[:1000], axis=1)
    if not np.allclose(norms, 1.0, atol=1e-3):
        print(f"warning: {path} rows are not unit length (norms {norms.min():.3f}..{norms.max():.3f})")
    return matrix


def rss_mb() -> float:
    return benchlib.memory_mb()["VmRSS"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_faiss_seconds(repeats: int = 3) -> list[float]:
    """Cold `import faiss` in fresh interpreters (numpy already imported, as in the product)."""
    code = "import numpy, time; t = time.perf_counter(); import faiss; print(time.perf_counter() - t)"
    return [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(repeats)]


def timed_batches(search, queries: np.ndarray, repeats: int) -> list[float]:
    """Wall seconds of `repeats` searches of the whole query batch."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        search(queries)
        times.append(time.perf_counter() - start)
    return times


def single_query_ms(index, queries: np.ndarray, rerank, count: int = 200) -> list[float]:
    times = []
    for row in queries[:count]:
        start = time.perf_counter()
        index.search(row[None, :], K, rerank=rerank)
        times.append((time.perf_counter() - start) * 1000)
    return times


def sqlite_rerank_ms(vectors: np.ndarray, fetch: int, trials: int = 200, rows: int = 100_000) -> list[float]:
    """Cost of the product's re-rank source: one `IN (...)` read of `fetch` embedding blobs per query.

    Uses a temporary catalog-like table of min(N, rows) rows (id INTEGER PRIMARY KEY, embedding BLOB);
    B-tree lookups grow only logarithmically, so this is close to the cost at N. The page cache is warm.
    """
    rows = min(rows, len(vectors))
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as folder:
        db = sqlite3.connect(Path(folder) / "catalog.db")
        db.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT, embedding BLOB)")
        db.executemany("INSERT INTO images VALUES (?, ?, ?)",
                       ((i, f"/photos/{i:08d}.jpg", vectors[i].tobytes()) for i in range(rows)))
        db.commit()
        times = []
        for _ in range(trials):
            wanted = np.sort(rng.choice(rows, fetch, replace=False))
            start = time.perf_counter()
            sql = f"SELECT id, embedding FROM images WHERE id IN ({','.join('?' * fetch)})"
            got = dict(db.execute(sql, [int(i) for i in wanted]).fetchall())
            np.stack([np.frombuffer(got[int(i)], np.float32) for i in wanted])
            times.append((time.perf_counter() - start) * 1000)
        db.close()
    return times


def cold_cli_latencies(args: argparse.Namespace) -> dict:
    """Cold CLI text / indexed-image query and warm in-process p50/p95 on a generated ViT-B-32 library."""
    if args.library_images <= 0:
        return {}
    from query_latency import cold_cli_latencies as measure

    figures = measure(Path(args.work), images=args.library_images, runs=args.cold_runs,
                      segments=args.library_segments)
    if not args.library_segments:
        print(f"CLI on a {figures['library_images']}-image ViT-B-32 library, new process each query: "
              f"{_latency_line(figures)}", flush=True)
        return figures
    for name, label in (("photos", f"{args.library_images} photos"),
                        ("photos_and_videos", f"{args.library_images} photos + {args.library_segments} video "
                                              f"moments ({figures['segments_per_video']} per video)")):
        one = figures[name]
        print(f"CLI on {label}, new process each query: {_latency_line(one)}; moments=True p50 "
              f"{one['warm_moments_p50_ms']} ms, p95 {one['warm_moments_p95_ms']} ms; by vector p50 "
              f"{one['vector_p50_ms']} ms (moments {one['vector_moments_p50_ms']} ms), rank calls per search "
              f"{one['vector_grouping']['rank_calls_mean']} (max {one['vector_grouping']['rank_calls_max']})"
              + "".join(f"; {kind.replace('_', ' ')} p50 {got['p50_ms']} ms, p95 {got['p95_ms']} ms (moments "
                        f"{got['moments_p50_ms']} ms), rank calls {got['grouping']['rank_calls_mean']}"
                        for kind, got in one.get("near_videos", {}).items()), flush=True)
    print(f"load average {figures['loadavg_before']} before, {figures['loadavg_after']} after; other processes' "
          f"share of the CPU {100 * figures['foreign_cpu_share']:.1f}%", flush=True)
    return figures


def _latency_line(figures: dict) -> str:
    return (f"text {figures['cold_text_warm_cache_s']} s warm cache, {figures['cold_text_cold_cache_s']} s cold "
            f"cache; indexed image {figures['cold_image_warm_cache_s']} s warm cache, "
            f"{figures['cold_image_cold_cache_s']} s cold cache; in-process warm p50 {figures['warm_p50_ms']} ms, "
            f"p95 {figures['warm_p95_ms']} ms")


def described(values: list[float], digits: int = 2) -> str:
    return f"median {np.median(values):.{digits}f} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000,
                        help="synthetic image vectors (default 1M; 0 skips the ANN part)")
    parser.add_argument("--queries", type=int, default=1000, help="synthetic text-like queries (default 1000)")
    parser.add_argument("--vectors-file", type=Path, help="float32 (N, d) unit rows to index instead")
    parser.add_argument("--queries-file", type=Path, help="float32 (Q, d) unit rows to query instead")
    parser.add_argument("--ids-out", type=Path, help="write the top-10 row indices per query (int64, Q x 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ondisk", action="store_true",
                        help="measure the on-disk IVF instead (scripts/bench_ondisk.py: vectors generated to a "
                             "memory-mapped file, exact ground truth by chunks, a separate query process)")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[32, 64, 128], help="with --ondisk: cells probed")
    parser.add_argument("--library-images", type=int, default=100_000,
                        help="size of the generated library for CLI latencies (0 skips them)")
    parser.add_argument("--library-segments", type=int, default=0,
                        help="also measure the same library plus this many video moments (50 per stub video), side "
                             "by side with the photo-only one (default 0: photos only)")
    parser.add_argument("--cold-runs", type=int, default=7, help="cold CLI runs per query kind (median reported)")
    parser.add_argument("--work", default=str(benchlib.WORK),
                        help="folder for the generated library and model (reused between runs)")
    return parser.parse_args(argv)


def make_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    if bool(args.vectors_file) != bool(args.queries_file):
        sys.exit("--vectors-file and --queries-file go together")
    if args.vectors_file:
        return load_matrix(args.vectors_file), load_matrix(args.queries_file)
    return synthetic(args.vectors, args.queries, seed=args.seed)


def measure_ann(vectors: np.ndarray, queries: np.ndarray) -> tuple[dict, np.ndarray]:
    """Build, search (batch and one by one), save and reload the index the library would choose."""
    from page_cache import evict, resident

    from indexer.vectors.index import VectorIndex

    rss_before = rss_mb()
    start = time.perf_counter()
    index = VectorIndex.build(vectors.shape[1], np.arange(len(vectors)), vectors)
    build_s = time.perf_counter() - start
    rerank = vectors.__getitem__  # in memory here; the product reads the blobs from SQLite (see sqlite_rerank_ms)
    search = lambda q: index.search(q, K, rerank=rerank)
    search(queries[:10])
    batch = timed_batches(search, queries, 3)
    _, found = search(queries)
    single = single_query_ms(index, queries, rerank)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vectors.idx"
        start = time.perf_counter()
        index.save(path)
        save_s = time.perf_counter() - start
        file_bytes = path.stat().st_size
        load_s, first_s = load_seconds(path, queries[:1], rerank)  # warm: the file is still cached after the save
        evict([path])
        still_resident = resident([path])[0] / max(file_bytes, 1)
        load_cold_s, first_cold_s = load_seconds(path, queries[:1], rerank)
    result = dict(kind=index.kind, nlist=index.nlist, nprobe=index.nprobe, fetch=index.candidates(K),
                  build_s=build_s, batch_s=batch, single_ms=single, save_s=save_s, load_s=load_s,
                  load_cold_s=load_cold_s, load_cold_resident=still_resident, first_query_ms=1000 * first_s,
                  first_query_cold_ms=1000 * first_cold_s,
                  file_bytes=file_bytes, index_rss_mb=rss_mb() - rss_before, peak_rss_after_build_mb=peak_rss_mb())
    return result, found


def load_seconds(path: Path, query: np.ndarray, rerank) -> tuple[float, float]:
    """Seconds to load a saved index file, and then to answer a first query (the file is mapped: reads are lazy)."""
    from indexer.vectors.index import VectorIndex

    start = time.perf_counter()
    index = VectorIndex.load(path)
    loaded = time.perf_counter()
    index.search(query, K, rerank=rerank)
    return loaded - start, time.perf_counter() - loaded


def measure_flat(vectors: np.ndarray, queries: np.ndarray) -> tuple[dict, np.ndarray]:
    """Exact search with the library's flat index over the same vectors, queries and threads."""
    from indexer.vectors.index import FLAT, VectorIndex

    index = VectorIndex.build(vectors.shape[1], np.arange(len(vectors)), vectors, kind=FLAT)
    search = lambda q: index.search(q, K)
    batch = timed_batches(search, queries, 2)
    _, exact = search(queries)
    return dict(batch_s=batch, single_ms=single_query_ms(index, queries, None, count=20)), exact


def report(args: argparse.Namespace, n: int, q: int, ann: dict, flat: dict, extra: dict) -> dict:
    """Print the table and return the JSON summary."""
    qps = q / float(np.median(ann["batch_s"]))
    flat_qps = q / float(np.median(flat["batch_s"]))
    index = (f"{ann['kind']} nlist={ann['nlist']} nprobe={ann['nprobe']} rerank={ann['fetch']}"
             if ann["nlist"] else ann["kind"])
    rows = [
        ("index", index),
        ("vectors x queries", f"{n} x {q}, threads {extra['threads']}"),
        ("recall@10 vs exact", f"{extra['recall']:.4f}"),
        ("ANN batch s", described(ann["batch_s"]) + f" -> {qps:.0f} q/s (in-memory re-rank)"),
        ("flat batch s", described(flat["batch_s"]) + f" -> {flat_qps:.0f} q/s"),
        ("speedup vs flat", f"{qps / flat_qps:.1f}x"),
        ("ANN single query ms", described(ann["single_ms"])),
        ("flat single query ms", described(flat["single_ms"])),
        ("SQLite re-rank ms/query", described(extra["sqlite_ms"]) + f" ({ann['fetch']} blobs; not in q/s above)"),
        ("bytes/vector", f"{ann['file_bytes'] / n:.1f} (saved index file size / N)"),
        ("build s", f"{ann['build_s']:.1f}"),
        ("save s / load s", f"{ann['save_s']:.2f} / {ann['load_s']:.2f} warm cache, {ann['load_cold_s']:.2f} cold"
                            f" (resident after eviction: {100 * ann['load_cold_resident']:.1f}%)"),
        ("first query after load ms", f"{ann['first_query_ms']:.1f} warm cache, {ann['first_query_cold_ms']:.1f} cold"),
        ("index RSS MB", f"{ann['index_rss_mb']:.0f} (RSS growth over the build)"),
        ("peak RSS MB", f"{ann['peak_rss_after_build_mb']:.0f} after build, {peak_rss_mb():.0f} overall"),
        ("import faiss s", described(extra["import_faiss_s"], 3)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return dict(recall_at_10=round(extra["recall"], 4), speedup_vs_flat=round(qps / flat_qps, 2),
                bytes_per_vector=round(ann["file_bytes"] / n, 1), index=index, build_s=round(ann["build_s"], 1),
                qps=round(qps, 1), flat_qps=round(flat_qps, 1), n=n, queries=q, threads=extra["threads"],
                ann_single_p50_ms=round(float(np.median(ann["single_ms"])), 3),
                flat_single_p50_ms=round(float(np.median(flat["single_ms"])), 3),
                sqlite_rerank_p50_ms=round(float(np.median(extra["sqlite_ms"])), 3),
                save_s=round(ann["save_s"], 2), load_s=round(ann["load_s"], 2),
                load_cold_cache_s=round(ann["load_cold_s"], 2),
                first_query_after_load_ms=round(ann["first_query_ms"], 1),
                first_query_after_cold_load_ms=round(ann["first_query_cold_ms"], 1),
                index_rss_mb=round(ann["index_rss_mb"]), peak_rss_mb=round(peak_rss_mb()),
                import_faiss_s=round(float(np.median(extra["import_faiss_s"])), 3))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.vectors == 0:
        benchlib.emit(cold_cli_latencies(args))
        return
    if args.ondisk:
        import bench_ondisk

        bench_ondisk.main(["--vectors", str(args.vectors), "--queries", str(args.queries), "--seed", str(args.seed),
                           "--work", str(Path(args.work) / "ondisk"), "--nprobe", *map(str, args.nprobe)])
        return
    import_faiss_s = import_faiss_seconds()
    start = time.perf_counter()
    vectors, queries = make_data(args)
    print(f"data: {vectors.shape[0]} x {vectors.shape[1]} vectors, {len(queries)} queries "
          f"({time.perf_counter() - start:.1f}s)", flush=True)
    ann, found = measure_ann(vectors, queries)
    print(f"ANN built and searched ({ann['build_s']:.1f}s build)", flush=True)
    flat, exact = measure_flat(vectors, queries)
    if args.ids_out:
        np.save(args.ids_out, found.astype(np.int64))
    from indexer.vectors.index import THREADS

    extra = dict(recall=recall_at_k(found, exact), threads=THREADS, import_faiss_s=import_faiss_s,
                 sqlite_ms=sqlite_rerank_ms(vectors, ann["fetch"]))
    summary = report(args, len(vectors), len(queries), ann, flat, extra)
    summary.update(cold_cli_latencies(args))
    benchlib.emit(summary)


if __name__ == "__main__":
    main()
