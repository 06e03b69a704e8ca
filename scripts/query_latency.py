"""Query latency of the real CLI and API on a generated ViT-B-32 library (used by bench_search.py).

The library is made the way a user makes one (`searchengine index` over a few generated photos, which also
exports the text tower), then grown to N images with synthetic clustered embeddings written straight into
the catalog, since encoding 100k real photos takes hours here and query cost does not depend on where the
vectors came from. Each kind of query is timed in new processes with a warm page cache and with a cold one
(see cold_cache_run), and in one process (warm).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

SUBJECTS = ("dog cat child horse bicycle car boat train bird woman man family cake tree house "
            "castle bridge tent kite balloon").split()
ACTIONS = ("running sleeping playing standing sitting jumping parked floating flying walking "
           "smiling hiding").split()
PLACES = ("on a beach", "in the snow", "in a forest", "at night", "in the city", "by a river", "at sunset",
          "in a kitchen", "on a mountain", "in the rain", "at a birthday party", "in a garden", "on a street",
          "under a bridge", "in the fog", "at the market")


def query_texts(count: int, seed: int) -> list[str]:
    """Distinct queries shaped like what people type ("a dog running on a beach"): no two the same,
    so no cache can help; 5-9 words, as photo searches are."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    while len(texts) < count:
        text = f"a {rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)}"
        if text not in texts:
            texts.append(text)
    return texts


def make_library(work: Path, images: int) -> tuple[Path, Path]:
    """(library folder, one indexed photo), built once and reused."""
    from bench_index import make_photo
    from random_model import build_random_model

    library, photos = work / f"query-library-{images}", work / f"query-photos-{images}"
    if (library / "catalog.sqlite").exists():
        return library, photos / "p0.jpg"
    model = build_random_model(work / "random-vit-b-32")
    photos.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        make_photo(i, (640, 480)).save(photos / f"p{i}.jpg", quality=90)
    searchengine("index", str(photos), "--library", str(library), "--model", f"local-dir:{model}")
    _add_synthetic_rows(library, images - 8, work / f"query-stubs-{images}")
    # A writer run, as after a user's own index run: it chooses (and trains) the index for this size.
    searchengine("index", str(photos), "--library", str(library))
    return library, photos / "p0.jpg"


def _add_synthetic_rows(library: Path, count: int, stubs: Path, chunk: int = 5000) -> None:
    """Rows with synthetic embeddings whose paths are empty stub files: a search leaves out hits whose files
    are gone, so the files must exist for the figures to be a real library's."""
    from indexer.catalog.store import BatchWrite, Catalog, StoredImage

    catalog = Catalog.open(library / "catalog.sqlite", writable=True)
    dim = int(catalog.meta()["dim"])
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((max(1, count // 200), dim)).astype(np.float32)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        folder = stubs / f"{start // chunk:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = [os.fsencode(folder / f"{start + i:08d}.jpg") for i in range(n)]
        for path in paths:
            open(path, "wb").close()
        stored = [StoredImage(p, 1, 1, b"%016d" % (start + i), v) for i, (p, v) in enumerate(zip(paths, vectors))]
        catalog.apply(BatchWrite(stored=stored))
    catalog.close()


CPU_SECONDS: list[float] = []  # CPU time (user + system) of each CLI run, in order: less swayed by a busy machine


def _user_env() -> dict[str, str]:
    """A user's environment: offline, and Python caching compiled modules as an installed package does (some
    sandboxes set PYTHONDONTWRITEBYTECODE, which would charge every query ~50 ms of recompiling)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def searchengine(*args: str) -> float:
    """Run the CLI as a fresh process; its wall time in seconds (its CPU time is appended to CPU_SECONDS)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "searchengine", *args], check=True, capture_output=True, env=_user_env())
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECONDS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
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
    import json
    import sysconfig

    from page_cache import python_files

    probe = subprocess.run([sys.executable, "-c", PROBE, *query_args], capture_output=True, text=True,
                           check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    loaded = json.loads(probe.stderr.strip().splitlines()[-1])
    site = Path(sysconfig.get_path("purelib"))
    packages = {site / Path(f).relative_to(site).parts[0] for f in loaded if Path(f).is_relative_to(site)}
    packages |= {p for p in site.iterdir() if p.is_file()}
    heavy = {"torch", "open_clip", "sqlalchemy", "PIL"} & {p.name for p in packages}
    if heavy:
        raise RuntimeError(f"the query loaded {sorted(heavy)}")
    return {"library": [library], "python": python_files(), "packages": sorted(packages),
            "source": [ROOT / "indexer", ROOT / "searchengine"]}


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
    from searchengine.library.api import Library

    lib = Library.open(library)
    lib.search(text="warm-up query", limit=20)
    times = []
    for text in texts:
        started = time.perf_counter()
        lib.search(text=text, limit=20)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"warm_p50_ms": round(times[len(times) // 2], 2), "warm_p95_ms": round(times[int(len(times) * 0.95)], 2)}


if __name__ == "__main__":
    import json

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(cold_cli_latencies(ROOT / ".bench", size)))
