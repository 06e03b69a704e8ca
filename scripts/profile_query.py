"""Where one new-process query spends its time: import time per top-level module (`-X importtime`), bytes read
from disk per file on a cold page cache (mincore after an eviction), and the wall time of each step the CLI
reports with SEARCHENGINE_PROFILE=1 (argument parsing, library open, index load, text tower load and probe,
text encoding, index search, stat of hits, metadata, output).

The library is benchlib.grown_library (the one bench_search's CLI figures use): `searchengine index` over 8
generated photos with the random ViT-B-32, grown to --images rows of synthetic embeddings.

    .venv/bin/python scripts/profile_query.py [--images 100000] [--runs 7] [--image] [--baseline CHECKOUT]
                                              [--in-process N]

--baseline: a checkout of an earlier commit (`git worktree add /tmp/before COMMIT`), whose new-process queries are
timed interleaved with this tree's, warm and cold, on the same library: the before/after of a change in one run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from page_cache import evict, files_under, resident
from query_latency import query_files

import benchlib

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def run_query(args: list[str], *python_flags: str, tree: Path | None = None
              ) -> tuple[float, subprocess.CompletedProcess]:
    """One new-process query; `tree`: run that checkout's code instead (`python -m` imports from the cwd first)."""
    env = benchlib.cli_env(SEARCHENGINE_PROFILE="1")
    started = time.perf_counter()
    done = subprocess.run([benchlib.SEARCHENGINE[0], *python_flags, *benchlib.SEARCHENGINE[1:], *args],
                          capture_output=True, text=True, env=env, check=True, cwd=tree or benchlib.ROOT)
    return time.perf_counter() - started, done


def side_by_side(baseline: Path, files: dict[str, list[Path]], query, common: list[str], runs: int,
                 first: int) -> dict[str, float]:
    """Median wall seconds of this tree's and `baseline`'s new-process queries, interleaved in one run (warm, then
    cold), the same texts for both: what changed, with the machine's drift shared alike."""
    walls: dict[str, list[float]] = {"warm_s": [], "baseline_warm_s": [], "cold_s": [], "baseline_cold_s": []}
    run_query([*query(first), *common], tree=baseline)  # compiles the baseline's modules, as an install would have
    for n in range(runs):
        walls["warm_s"].append(run_query([*query(first + n), *common])[0])
        walls["baseline_warm_s"].append(run_query([*query(first + n), *common], tree=baseline)[0])
    for n in range(runs):
        for key, tree in (("cold_s", None), ("baseline_cold_s", baseline)):
            evict([p for paths in files.values() for p in paths])
            walls[key].append(run_query([*query(first + runs + n), *common], tree=tree)[0])
    return {key: round(statistics.median(values), 3) for key, values in walls.items()}


IN_PROCESS = """
import json, sys, time
from searchengine import Library
library = Library.open(sys.argv[1])
texts = json.loads(sys.argv[2])
library.search(text="warm-up " + texts[0], limit=int(sys.argv[3]))
times = []
for text in texts:
    started = time.perf_counter()
    library.search(text=text, limit=int(sys.argv[3]))
    times.append(1000 * (time.perf_counter() - started))
print(json.dumps(times))
"""


def in_process(library: Path, trees: dict[str, Path | None], count: int, limit: int = 20,
               rounds: int = 3) -> dict[str, dict[str, float]]:
    """p50/p95 ms of `Library.search(text=..., limit=20)` in a warm process (after one query), each tree in a process
    of its own, `rounds` rounds interleaved, a different text every query (no two the same across trees either)."""
    texts = benchlib.query_texts(len(trees) * rounds * count, int(time.time()) + 1)
    times: dict[str, list[float]] = {name: [] for name in trees}
    for r in range(rounds):
        for t, (name, tree) in enumerate(trees.items()):
            chunk = texts[(r * len(trees) + t) * count:(r * len(trees) + t + 1) * count]
            done = subprocess.run([benchlib.SEARCHENGINE[0], "-c", IN_PROCESS, str(library), json.dumps(chunk),
                                   str(limit)], capture_output=True, text=True, env=benchlib.cli_env(),
                                  check=True, cwd=tree or benchlib.ROOT)
            times[name] += json.loads(done.stdout.strip().splitlines()[-1])
    return {name: {"p50_ms": round(statistics.median(v), 2), "p95_ms": round(sorted(v)[int(0.95 * (len(v) - 1))], 2),
                   "n": len(v)} for name, v in times.items()}


def steps_of(done: subprocess.CompletedProcess) -> dict[str, float]:
    for line in reversed(done.stderr.splitlines()):
        if line.startswith('{"profile_ms"'):
            return json.loads(line)["profile_ms"]
    raise RuntimeError(f"no profile line in the query's stderr: {done.stderr[-500:]}")


def import_times(args: list[str]) -> dict[str, float]:
    """Milliseconds of import per top-level package (the sum of its modules' own times)."""
    _, done = run_query(args, "-X", "importtime")
    own: dict[str, float] = defaultdict(float)
    for line in done.stderr.splitlines():
        found = IMPORT_LINE.match(line)
        if found:
            own[found.group(4).split(".")[0]] += int(found.group(1)) / 1000
    return dict(sorted(((k, round(v, 1)) for k, v in own.items()), key=lambda kv: -kv[1]))


def cold_reads(files: dict[str, list[Path]], args: list[str]) -> tuple[float, dict[str, float], dict[str, int]]:
    """(wall seconds, steps, bytes read per file) of one query after evicting every file it touches."""
    every = [p for paths in files.values() for p in paths]
    evict(every)
    before = {str(p): resident([p])[0] for p in files_under(every)}
    wall, done = run_query(args)
    read = {}
    for path in files_under(every):
        got = resident([path])[0] - before.get(str(path), 0)
        if got > 0:
            read[str(path)] = got
    return wall, steps_of(done), dict(sorted(read.items(), key=lambda kv: -kv[1]))


def median_steps(runs: list[dict[str, float]]) -> dict[str, float]:
    names = list(dict.fromkeys(name for run in runs for name in run))
    return {n: round(statistics.median(run.get(n, 0.0) for run in runs), 2) for n in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000, help="library size (default 100000)")
    parser.add_argument("--runs", type=int, default=7, help="new-process queries per figure (median)")
    parser.add_argument("--image", action="store_true", help="profile an image query of an indexed file instead")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a checkout of an earlier commit: its queries are timed too, interleaved with these")
    parser.add_argument("--in-process", type=int, default=0, metavar="N",
                        help="also time N text queries in a warm process (Library.search, limit 20) per round, three "
                             "rounds, interleaved with --baseline's: in_process p50/p95")
    args = parser.parse_args()
    library, photos = benchlib.grown_library(benchlib.WORK, args.images, "query")
    texts = benchlib.query_texts(5 * args.runs + 3, int(time.time()))
    query = (lambda n: ["search", "--image", str(photos[0])]) if args.image else (lambda n: ["search", texts[n]])
    common = ["--library", str(library), "--json"]
    run_query([*query(0), *common])  # the first run after building may still write the index file
    warm = [run_query([*query(1 + n), *common]) for n in range(args.runs)]
    imports = import_times([*query(args.runs + 1), *common])
    files = query_files(library, [*query(args.runs + 2), "--library", str(library)])
    cold = [cold_reads(files, [*query(args.runs + 3 + n), *common]) for n in range(args.runs)]
    read = cold[len(cold) // 2][2]
    by_kind = {kind: sum(v for k, v in read.items() if any(k.startswith(str(p)) for p in paths))
               for kind, paths in files.items()}
    figures = {
        "library_images": args.images, "query": "image" if args.image else "text",
        "warm_cache_s": round(statistics.median(w for w, _ in warm), 3),
        "warm_steps_ms": median_steps([steps_of(d) for _, d in warm]),
        "cold_cache_s": round(statistics.median(w for w, _, _ in cold), 3),
        "cold_steps_ms": median_steps([s for _, s, _ in cold]),
        "import_ms_by_package": dict(list(imports.items())[:15]),
        "cold_read_mb_by_kind": {k: round(v / 1e6, 2) for k, v in by_kind.items()},
        "cold_read_mb_top_files": {os.path.relpath(k, benchlib.ROOT) if k.startswith(str(benchlib.ROOT)) else k:
                                   round(v / 1e6, 2) for k, v in list(read.items())[:15]},
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }
    if args.baseline is not None:
        figures["side_by_side"] = {"baseline": str(args.baseline), **side_by_side(
            args.baseline, files, query, common, args.runs, 2 * args.runs + 4)}
    if args.in_process:
        trees = {"now": None, **({"baseline": args.baseline} if args.baseline is not None else {})}
        figures["in_process"] = in_process(library, trees, args.in_process)
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for name, amount in value.items():
                print(f"  {json.dumps(amount) if isinstance(amount, dict) else amount:>10}  {name}")
        else:
            print(f"{key}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
