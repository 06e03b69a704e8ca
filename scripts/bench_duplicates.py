"""Benchmark `searchengine duplicates` on a synthetic library with planted near-copies.

The library holds N CLIP-like embeddings (benchlib.synthetic: nearest distinct image at cosine ~0.77),
of which P are near-copies of other images (noise of norm 0.1-0.31 added: cosine to their original
~0.955-0.995, just above the default threshold 0.95) and E are byte-identical copies (same embedding, same
content hash). The catalog is written directly (no model, no files) and its vector index built once, as
`index` leaves it; then the `duplicates --json` command runs in a fresh process, timed, with its peak RSS.

Reports wall time, peak RSS, planted pairs found in one group (recall), and groups holding two unplanted
images (false merges). The last line printed is one JSON object.

    .venv/bin/python scripts/bench_duplicates.py [--n 100000] [--copies 2000] [--identical 500]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib
import numpy as np
from benchlib import synthetic, unit

_PEAK_REPORTING_CLI = """
import json, runpy, sys
sys.argv = json.loads(sys.argv[1])
try:
    runpy.run_module("searchengine", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(f"peak_kb={peak}", file=sys.stderr)
"""


def planted(n: int, copies: int, identical: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, 512), origin (n,)): origin[i] is the row that row i copies, or i itself."""
    rng = np.random.default_rng(seed + 1)
    base_n = n - copies - identical
    vectors, _ = synthetic(base_n, 1, seed=seed)
    sources = rng.choice(base_n, copies + identical, replace=False)
    norms = rng.uniform(0.1, 0.31, (copies, 1)).astype(np.float32)
    noise = unit(rng.standard_normal((copies, vectors.shape[1]), dtype=np.float32)) * norms
    near = unit(vectors[sources[:copies]] + noise)
    same = vectors[sources[copies:]]
    origin = np.concatenate([np.arange(base_n), sources])
    return np.concatenate([vectors, near, same]), origin


def write_library(folder: Path, vectors: np.ndarray, origin: np.ndarray) -> None:
    """Rows through the catalog's write path; a byte-identical copy shares its original's content hash."""
    from indexer.catalog.store import StoredImage

    def row(k: int) -> StoredImage:
        source = int(origin[k]) if np.array_equal(vectors[k], vectors[origin[k]]) else k
        digest = hashlib.blake2b(b"%d" % source, digest_size=16).digest()
        return StoredImage(b"/photos/%07d.jpg" % k, 1000 + k, k * 10**9, digest, vectors[k])

    catalog = benchlib.synthetic_catalog(folder / "catalog.sqlite", vectors.shape[1])
    benchlib.write_rows(catalog, len(vectors), row, chunk=5000)
    catalog.close()


def build_index(folder: Path) -> tuple[str, float]:
    from searchengine.library.api import Library

    library = Library.open(folder, notice=lambda message: None)
    summary = library.repair()  # built from the catalog and saved, as `index` leaves it
    library.close()
    return summary.index, summary.seconds


def run_duplicates(folder: Path, threshold: float | None) -> tuple[list, float, float, float]:
    """(groups, wall seconds, CPU seconds, peak RSS MB) of one `duplicates --json` process."""
    argv = ["searchengine", "duplicates", "--json", "--library", str(folder)]
    if threshold is not None:
        argv += ["--threshold", str(threshold)]
    # The child reports its own peak RSS: RUSAGE_CHILDREN's would count this (large) process, forked before exec.
    command = [sys.executable, "-c", _PEAK_REPORTING_CLI, json.dumps(argv)]
    result, seconds, cpu = benchlib.with_child_cpu(
        lambda: subprocess.run(command, capture_output=True, env=benchlib.cli_env(), check=True))
    peak_kb = int(result.stderr.decode().rsplit("peak_kb=", 1)[1].split()[0])
    return json.loads(result.stdout), seconds, cpu, peak_kb / 1024


def score(groups: list, origin: np.ndarray, copies: int, identical: int) -> dict:
    row_group = {}
    for n, group in enumerate(groups):
        for image in group["images"]:
            row_group[int(image["path"][len("/photos/"):-len(".jpg")])] = n
    base_n = len(origin) - copies - identical
    planted_rows = range(base_n, len(origin))
    found = sum(1 for r in planted_rows if r in row_group and row_group.get(int(origin[r])) == row_group[r])
    originals_per_group: dict[int, set] = {}
    for row, n in row_group.items():
        originals_per_group.setdefault(n, set()).add(int(origin[row]))
    false_merges = sum(1 for s in originals_per_group.values() if len(s) > 1)
    return {"planted_pairs": copies + identical, "planted_found": found,
            "recall": round(found / max(copies + identical, 1), 4), "groups": len(groups),
            "groups_merging_distinct_images": false_merges}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="images in the library (default 100k)")
    parser.add_argument("--copies", type=int, default=2000, help="planted near-copies")
    parser.add_argument("--identical", type=int, default=500, help="planted byte-identical copies")
    parser.add_argument("--threshold", type=float, default=None, help="passed to duplicates (default: its own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=benchlib.WORK)
    args = parser.parse_args(argv)
    folder = args.work / f"duplicates-{args.n}-{args.copies}-{args.identical}-{args.seed}"
    vectors, origin = planted(args.n, args.copies, args.identical, args.seed)
    if not (folder / "catalog.sqlite").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.perf_counter()
        write_library(folder, vectors, origin)
        print(f"catalog written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    kind, index_seconds = build_index(folder)
    del vectors
    groups, seconds, cpu, peak_mb = run_duplicates(folder, args.threshold)
    figures = {"images": args.n, "index": kind, "index_build_s": round(index_seconds, 1),
               "duplicates_s": round(seconds, 2), "duplicates_cpu_s": round(cpu, 2),
               "duplicates_peak_rss_mb": round(peak_mb), "load_average": round(os.getloadavg()[0], 1),
               "threshold": args.threshold, **score(groups, origin, args.copies, args.identical),
               "cpus": os.cpu_count()}
    benchlib.emit(figures)


if __name__ == "__main__":
    main()
