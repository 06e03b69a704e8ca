"""Query latency of the real CLI and API on a generated ViT-B-32 library (used by bench_search.py).

The library is benchlib.grown_library: made the way a user makes one (`searchengine index` over a few generated
photos, which also exports the text tower), then grown to N images with synthetic embeddings written through
the catalog, since encoding 100k real photos takes hours here and query cost does not depend on where the
vectors came from. Each kind of query is timed in new processes with a warm page cache and with a cold one
(see cold_cache_run), and in one process (warm).

With SEGMENTS, the photo-only library and the same photos plus SEGMENTS video moments (benchlib.grown_library's
`segments`: 50 moments per stub video) are measured side by side in one run (compare_with_videos).

    .venv/bin/python scripts/query_latency.py [IMAGES [SEGMENTS]]
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
import numpy as np
from benchlib import query_texts

CPU_SECONDS: list[float] = []  # CPU time (user + system) of each CLI run, in order: less swayed by a busy machine


def make_library(work: Path, images: int, segments: int = 0) -> tuple[Path, Path]:
    """(library folder, one indexed photo), built once and reused; with `segments` video moments besides."""
    library, photos = benchlib.grown_library(work, images, "query", segments=segments)
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


def cold_cli_latencies(work: Path, images: int = 100_000, runs: int = 7, warm_queries: int = 50,
                       segments: int = 0) -> dict:
    """Median cold CLI latencies (text, indexed image; warm and cold page cache) and warm in-process p50/p95.

    With `segments`, two libraries side by side: the photo-only one of `images` rows and the same photos plus
    `segments` video moments (compare_with_videos)."""
    if segments:
        return compare_with_videos(work, images, segments, runs, warm_queries)
    library, indexed_photo = make_library(work, images)
    figures, = measure_libraries([(library, indexed_photo)], runs)
    warm = warm_latencies(library, query_texts(warm_queries, seed=int(time.time()) + 1))
    return {"library_images": images, **figures, "loadavg_1min": round(os.getloadavg()[0], 2), **warm}


def compare_with_videos(work: Path, images: int, segments: int, runs: int = 7, warm_queries: int = 50) -> dict:
    """The figures of cold_cli_latencies for the photo-only library ("photos") and for the same photos plus
    `segments` video moments ("photos_and_videos"), measured in one run: each new-process query is run on one
    library and then, with the same arguments, on the other; in-process, the same texts and vectors on each.
    In-process also: queries with moments=True, and queries by synthetic text-like vectors of the libraries'
    geometry (search_vector, no text tower) with how often the search fetched again to fill the page with
    distinct videos (rank calls per search), and the time of each step."""
    built = [make_library(work, images), make_library(work, images, segments)]
    load_before = os.getloadavg()
    texts = query_texts(warm_queries, seed=int(time.time()) + 1)
    (cli_figures, in_process), foreign = benchlib.foreign_share(lambda: (
        measure_libraries(built, runs), [in_process_latencies(library, texts, warm_queries) for library, _ in built]))
    load_after = os.getloadavg()
    names = ("photos", "photos_and_videos")
    out = {"library_images": images, "library_segments": segments,
           "segments_per_video": benchlib.SEGMENTS_PER_VIDEO, "cold_runs": runs, "warm_queries": warm_queries}
    for name, figures, warm in zip(names, cli_figures, in_process):
        out[name] = {**figures, **warm}
    keys = ("cold_text_warm_cache_s", "cold_text_cold_cache_s", "cold_image_warm_cache_s", "cold_image_cold_cache_s",
            "warm_p50_ms", "warm_p95_ms", "warm_moments_p50_ms", "warm_moments_p95_ms", "vector_p50_ms",
            "vector_moments_p50_ms")
    out["videos_minus_photos"] = {k: round(out[names[1]][k] - out[names[0]][k], 3) for k in keys}
    out["loadavg_before"] = [round(x, 2) for x in load_before]
    out["loadavg_after"] = [round(x, 2) for x in load_after]
    out["foreign_cpu_share"] = round(foreign, 4)
    return out


def measure_libraries(libraries: list[tuple[Path, Path]], runs: int) -> list[dict]:
    """Per (library, indexed photo): new-process text and indexed-image queries, `runs` each with a warm page cache
    and with a cold one; with several libraries, each run goes to each library in turn (same query text)."""
    texts = query_texts(2 * runs, int(time.time()))
    text_args = [[["search", t, "--json", "--library", str(library)] for t in texts] for library, _ in libraries]
    image_args = [["search", "--image", str(photo), "--json", "--library", str(library)]
                  for library, photo in libraries]
    for args in text_args:
        searchengine(*args[0])  # the first run after building may still write the index file
    files = [query_files(library, ["search", "probe query", "--library", str(library)]) for library, _ in libraries]
    kinds = ("text_warm_cache", "image_warm_cache", "text_cold_cache", "image_cold_cache")
    walls: list[dict[str, list]] = [{kind: [] for kind in kinds} for _ in libraries]
    cpus: list[dict[str, list[float]]] = [{kind: [] for kind in kinds} for _ in libraries]

    def timed(n: int, kind: str, run) -> None:
        walls[n][kind].append(run())
        cpus[n][kind].append(CPU_SECONDS[-1])

    CPU_SECONDS.clear()
    for i in range(runs):
        for n in range(len(libraries)):
            timed(n, "text_warm_cache", lambda: searchengine(*text_args[n][i]))
    for _ in range(runs):
        for n in range(len(libraries)):
            timed(n, "image_warm_cache", lambda: searchengine(*image_args[n]))
    for i in range(runs):
        for n in range(len(libraries)):
            timed(n, "text_cold_cache", lambda: cold_cache_run(files[n], text_args[n][runs + i]))
    for _ in range(runs):
        for n in range(len(libraries)):
            timed(n, "image_cold_cache", lambda: cold_cache_run(files[n], image_args[n]))
    results = []
    for n in range(len(libraries)):
        warm_text, warm_image = walls[n]["text_warm_cache"], walls[n]["image_warm_cache"]
        cold_text, cold_image = walls[n]["text_cold_cache"], walls[n]["image_cold_cache"]
        results.append({
            "cold_text_warm_cache_s": _median(warm_text), "cold_text_warm_cache_runs_s": _rounded(warm_text),
            "cold_image_warm_cache_s": _median(warm_image), "cold_image_warm_cache_runs_s": _rounded(warm_image),
            "cold_text_cold_cache_s": _median([t for t, _ in cold_text]),
            "cold_text_cold_cache_runs_s": _rounded([t for t, _ in cold_text]),
            "cold_image_cold_cache_s": _median([t for t, _ in cold_image]),
            "cold_image_cold_cache_runs_s": _rounded([t for t, _ in cold_image]),
            "still_resident_after_evict": {kind: round(max(r[kind] for _, r in cold_text + cold_image), 4)
                                           for kind in files[n]},
            "evicted_bytes": _evicted_bytes(files[n]),
            "cpu_s": {kind: _median(cpus[n][kind]) for kind in kinds},
        })
    return results


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
    figures = benchlib.percentiles(_timed_ms(lambda text: lib.search(text=text, limit=20), texts))
    return {"warm_p50_ms": figures["p50_ms"], "warm_p95_ms": figures["p95_ms"]}


def in_process_latencies(library: Path, texts: list[str], vectors: int = 50, limit: int = 20) -> dict:
    """warm_latencies, the same with moments=True, then queries by `vectors` synthetic text-like vectors of the
    libraries' geometry (benchlib.synthetic's seed 7: the grown rows'), grouped and with moments, with what the
    grouping cost: rank calls per search (1 when the first fetch filled the page), the largest fetch, exact
    fallbacks (rank answering exactly when the probed cells could not fill a large fetch), videos per page and
    the median milliseconds of each step (searchengine.query.steps)."""
    from searchengine import Library

    lib = Library.open(library)
    lib.search(text="warm-up query", limit=limit)
    plain = benchlib.percentiles(_timed_ms(lambda text: lib.search(text=text, limit=limit), texts))
    lib.search(text="warm-up query", limit=limit, moments=True)
    moments = benchlib.percentiles(_timed_ms(lambda text: lib.search(text=text, limit=limit, moments=True), texts))
    dim = int(lib._readable_catalog().meta()["dim"])
    _, queries = benchlib.synthetic(0, vectors, dim, seed=7, draw_seed=9)
    lib.search_vector(queries[0], limit)
    by_vector = benchlib.percentiles(_timed_ms(lambda q: lib.search_vector(q, limit), queries))
    by_vector_moments = benchlib.percentiles(_timed_ms(lambda q: lib.search_vector(q, limit, moments=True), queries))
    return {"warm_p50_ms": plain["p50_ms"], "warm_p95_ms": plain["p95_ms"],
            "warm_moments_p50_ms": moments["p50_ms"], "warm_moments_p95_ms": moments["p95_ms"],
            "vector_p50_ms": by_vector["p50_ms"], "vector_p95_ms": by_vector["p95_ms"],
            "vector_moments_p50_ms": by_vector_moments["p50_ms"], "vector_moments_p95_ms": by_vector_moments["p95_ms"],
            "text_grouping": _grouping(lambda text: lib.search(text=text, limit=limit), texts),
            "vector_grouping": _grouping(lambda q: lib.search_vector(q, limit), queries),
            **near_videos(lib, library, vectors, limit)}


def near_videos(lib, library: Path, count: int, limit: int) -> dict:
    """Where grouping costs most: queries among a video's own moments. "More like this" on `count` moments
    (middle ones, of `count` videos) and on `count` photos, and queries by the centre (normalised mean) of each of
    those videos' moments, each grouped (timed, then its grouping counted) and with moments=True; in a library
    without videos, photos only."""
    import sqlite3

    db = sqlite3.connect(f"file:{library / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        paths = [r[0] for r in db.execute("SELECT DISTINCT path FROM images WHERE start_s IS NOT NULL ORDER BY path "
                                          "LIMIT ?", (count,))]
        moments = [[(i, np.frombuffer(e, np.float32)) for i, e in db.execute(
            "SELECT id, embedding FROM images WHERE path=? ORDER BY segment", (p,))] for p in paths]
        photos = [r[0] for r in db.execute(
            "SELECT id FROM images WHERE start_s IS NULL ORDER BY id LIMIT ? OFFSET 1000", (count,))]
    finally:
        db.close()
    kinds = {"similar_photo": (lambda i, m: lib.similar(i, limit, moments=m), photos)}
    if moments:
        kinds["similar_moment"] = (lambda i, m: lib.similar(i, limit, moments=m),
                                   [rows[len(rows) // 2][0] for rows in moments])
        kinds["video_centre"] = (lambda q, m: lib.search_vector(q, limit, moments=m),
                                 [benchlib.unit(np.mean([e for _, e in rows], axis=0)[None, :])[0] for rows in moments])
    out = {}
    for name, (search, items) in kinds.items():
        search(items[0], False)
        grouped = benchlib.percentiles(_timed_ms(lambda item: search(item, False), items))
        with_moments = benchlib.percentiles(_timed_ms(lambda item: search(item, True), items))
        out[name] = {**grouped, "moments_p50_ms": with_moments["p50_ms"], "moments_p95_ms": with_moments["p95_ms"],
                     "grouping": _grouping(lambda item: search(item, False), items)}
    return {"near_videos": out}


def _timed_ms(fn, items) -> list[float]:
    times = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - started) * 1000)
    return times


def _grouping(search, items) -> dict:
    """What each search(item) did to fill its page (untimed: rank and exact_top_k are wrapped to count)."""
    import searchengine.library.search as search_module
    import searchengine.query.ranking as ranking
    from searchengine.query import steps

    calls: list[int] = []
    exact: list[int] = []
    original_rank, original_exact = search_module.rank, ranking.exact_top_k

    def counted_rank(catalog, index, query, k, dim):
        calls.append(k)
        return original_rank(catalog, index, query, k, dim)

    def counted_exact(*args, **kwargs):
        exact.append(1)
        return original_exact(*args, **kwargs)

    rounds, largest, fallbacks, videos, step_ms = [], [], [], [], []
    search_module.rank, ranking.exact_top_k, steps.ENABLED = counted_rank, counted_exact, True
    try:
        for item in items:
            calls.clear()
            exact.clear()
            steps._seconds.clear()
            hits = search(item)
            rounds.append(len(calls))
            largest.append(max(calls, default=0))
            fallbacks.append(len(exact))
            videos.append(sum(h.kind == "video" for h in hits))
            step_ms.append({k: v * 1000 for k, v in steps._seconds.items()})
    finally:
        search_module.rank, ranking.exact_top_k, steps.ENABLED = original_rank, original_exact, False
        steps._seconds.clear()
    names = list(dict.fromkeys(name for run in step_ms for name in run))
    return {"rank_calls_mean": round(statistics.mean(rounds), 2), "rank_calls_max": max(rounds),
            "largest_fetch_max": max(largest), "largest_fetch_median": statistics.median(largest),
            "exact_fallbacks": sum(fallbacks), "video_hits_per_page_mean": round(statistics.mean(videos), 2),
            "step_median_ms": {n: round(statistics.median(run.get(n, 0.0) for run in step_ms), 2) for n in names}}


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    moments = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    benchlib.emit(cold_cli_latencies(benchlib.WORK, size, segments=moments))
