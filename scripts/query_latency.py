"""Query latency of the real CLI and API on a generated ViT-B-32 library (used by bench_search.py).

The library is benchlib.grown_library: made the way a user makes one (`searchengine index` over a few generated
photos, which also exports the text tower), then grown to N images with synthetic embeddings written through
the catalog, since encoding 100k real photos takes hours here and query cost does not depend on where the
vectors came from. Each kind of query is timed in new processes with a warm page cache and with a cold one
(see cold_cache_run), and in one process (warm).

    .venv/bin/python scripts/query_latency.py [IMAGES]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import benchlib
from benchlib import query_texts

CPU_SECONDS: list[float] = []  # CPU time (user + system) of each CLI run, in order: less swayed by a busy machine


def make_library(work: Path, images: int) -> tuple[Path, Path]:
    """(library folder, one indexed photo), built once and reused."""
    library, photos = benchlib.grown_library(work, images, "query")
    return library, photos[0]


def searchengine(*args: str) -> float:
    """Run the CLI as a fresh process; its wall time in seconds (its CPU time is appended to CPU_SECONDS)."""
    _, wall, cpu = benchlib.with_child_cpu(lambda: benchlib.cli(*args))
    CPU_SECONDS.append(cpu)
    return wall


PROBE = """
import json, sys
from searchengine.cli.main import main
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
files = {getattr(m, '__file__', None) for m in list(sys.modules.values())}
with open('/proc/self/maps') as maps:
    files |= {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
print(json.dumps(sorted(f for f in files if f and f.startswith('/'))), file=sys.stderr)
"""


def query_files(library: Path, query_args: list[str]) -> dict[str, list[Path]]:
    """What a query process reads, by kind: library, python (interpreter + stdlib), packages, source.

    Packages are the site-packages folders of every module (and mapped shared library) a probe query loaded,
    plus site-packages' top-level files (.pth files are read at every start); the source is this checkout.
    """
    import sysconfig

    from page_cache import python_files

    probe = subprocess.run([sys.executable, "-c", PROBE, *query_args], capture_output=True, text=True,
                           check=True, env=benchlib.cli_env())
    loaded = json.loads(probe.stderr.strip().splitlines()[-1])
    site = Path(sysconfig.get_path("purelib"))
    packages = {site / Path(f).relative_to(site).parts[0] for f in loaded if Path(f).is_relative_to(site)}
    packages |= {p for p in site.iterdir() if p.is_file()}
    heavy = {"torch", "open_clip", "sqlalchemy", "PIL"} & {p.name for p in packages}
    if heavy:
        raise RuntimeError(f"the query loaded {sorted(heavy)}")
    return {"library": [library], "python": python_files(), "packages": sorted(packages),
            "source": [benchlib.ROOT / "indexer", benchlib.ROOT / "searchengine"]}


def cold_cache_run(files: dict[str, list[Path]], args: list[str]) -> tuple[float, dict[str, float]]:
    """(wall seconds of a fresh CLI query, per kind the share of its files' bytes still resident after eviction).

    Pages that another process keeps mapped (a shared library in use elsewhere) stay: that share says so.
    """
    from page_cache import evict, resident

    evict([p for paths in files.values() for p in paths])
    shares = {}
    for kind, paths in files.items():
        got, total = resident(paths)
        shares[kind] = got / max(total, 1)
    return searchengine(*args), shares


def cold_cli_latencies(work: Path, images: int = 100_000, runs: int = 7, warm_queries: int = 50) -> dict:
    """Median cold CLI latencies (text, indexed image; warm and cold page cache) and warm in-process p50/p95."""
    library, indexed_photo = make_library(work, images)
    text_args = [["search", t, "--json", "--library", str(library)] for t in query_texts(2 * runs, int(time.time()))]
    image_args = ["search", "--image", str(indexed_photo), "--json", "--library", str(library)]
    searchengine(*text_args[0])  # the first run after building may still write the index file
    files = query_files(library, ["search", "probe query", "--library", str(library)])
    CPU_SECONDS.clear()
    warm_text = [searchengine(*a) for a in text_args[:runs]]
    warm_image = [searchengine(*image_args) for _ in range(runs)]
    cold_text = [cold_cache_run(files, a) for a in text_args[runs:]]
    cold_image = [cold_cache_run(files, image_args) for _ in range(runs)]
    cpu = {kind: _median(CPU_SECONDS[i * runs:(i + 1) * runs])
           for i, kind in enumerate(("text_warm_cache", "image_warm_cache", "text_cold_cache", "image_cold_cache"))}
    warm = warm_latencies(library, query_texts(warm_queries, seed=int(time.time()) + 1))
    return {
        "library_images": images,
        "cold_text_warm_cache_s": _median(warm_text), "cold_text_warm_cache_runs_s": _rounded(warm_text),
        "cold_image_warm_cache_s": _median(warm_image), "cold_image_warm_cache_runs_s": _rounded(warm_image),
        "cold_text_cold_cache_s": _median([t for t, _ in cold_text]),
        "cold_text_cold_cache_runs_s": _rounded([t for t, _ in cold_text]),
        "cold_image_cold_cache_s": _median([t for t, _ in cold_image]),
        "cold_image_cold_cache_runs_s": _rounded([t for t, _ in cold_image]),
        "still_resident_after_evict": {kind: round(max(r[kind] for _, r in cold_text + cold_image), 4)
                                       for kind in files},
        "evicted_bytes": _evicted_bytes(files),
        "cpu_s": cpu,
        "loadavg_1min": round(os.getloadavg()[0], 2),
        **warm,
    }


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def _evicted_bytes(files: dict[str, list[Path]]) -> dict[str, int]:
    from page_cache import files_under

    return {kind: sum(p.stat().st_size for p in files_under(paths)) for kind, paths in files.items()}


def warm_latencies(library: Path, texts: list[str]) -> dict:
    """In-process text queries through the Library API, after one warm-up query."""
    from searchengine import Library

    lib = Library.open(library)
    lib.search(text="warm-up query", limit=20)
    times = []
    for text in texts:
        started = time.perf_counter()
        lib.search(text=text, limit=20)
        times.append((time.perf_counter() - started) * 1000)
    figures = benchlib.percentiles(times)
    return {"warm_p50_ms": figures["p50_ms"], "warm_p95_ms": figures["p95_ms"]}


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    benchlib.emit(cold_cli_latencies(benchlib.WORK, size))
