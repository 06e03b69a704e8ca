"""Query latency of the real CLI and API on a generated ViT-B-32 library (used by bench_search.py).

The library is made the way a user makes one (`searchengine index` over a few generated photos, which also
exports the text tower), then grown to N images with synthetic clustered embeddings written straight into
the catalog, since encoding 100k real photos takes hours here and query cost does not depend on where the
vectors came from.
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
sys.path.insert(0, str(ROOT / "tests"))

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
    from images import photo
    from random_model import build_random_model

    library, photos = work / f"query-library-{images}", work / f"query-photos-{images}"
    if (library / "catalog.sqlite").exists():
        return library, photos / "p0.jpg"
    model = build_random_model(work / "random-vit-b-32")
    photos.mkdir(parents=True, exist_ok=True)
    for i in range(8):
        photo(i, (640, 480)).save(photos / f"p{i}.jpg", quality=90)
    searchengine("index", str(photos), "--library", str(library), "--model", f"local-dir:{model}")
    _add_synthetic_rows(library, images - 8)
    # A writer run, as after a user's own index run: it chooses (and trains) the index for this size.
    searchengine("index", str(photos), "--library", str(library))
    return library, photos / "p0.jpg"


def _add_synthetic_rows(library: Path, count: int, chunk: int = 5000) -> None:
    from indexer.catalog import BatchWrite, Catalog, StoredImage

    catalog = Catalog.open(library / "catalog.sqlite", writable=True)
    dim = int(catalog.meta()["dim"])
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((max(1, count // 200), dim)).astype(np.float32)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        stored = [StoredImage(b"/synthetic/%08d.jpg" % (start + i), 1, 1, b"%016d" % (start + i), v)
                  for i, v in enumerate(vectors)]
        catalog.apply(BatchWrite(stored=stored))
    catalog.close()


def searchengine(*args: str) -> float:
    """Run the CLI as a fresh process; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "searchengine", *args], check=True, capture_output=True,
                   env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return time.perf_counter() - started


def cold_cli_latencies(work: Path, images: int = 100_000, runs: int = 7, warm_queries: int = 50) -> dict:
    """Median cold CLI latencies (text, indexed image) and warm in-process p50/p95 on a library of `images`."""
    library, indexed_photo = make_library(work, images)
    texts = query_texts(runs, seed=int(time.time()))
    cold_text = [searchengine("search", t, "--json", "--library", str(library)) for t in texts]
    cold_image = [searchengine("search", "--image", str(indexed_photo), "--json", "--library", str(library))
                  for _ in range(runs)]
    warm = warm_latencies(library, query_texts(warm_queries, seed=int(time.time()) + 1))
    return {
        "library_images": images,
        "cold_text_s": round(statistics.median(cold_text), 3),
        "cold_text_runs_s": [round(t, 3) for t in cold_text],
        "cold_image_s": round(statistics.median(cold_image), 3),
        "cold_image_runs_s": [round(t, 3) for t in cold_image],
        **warm,
    }


def warm_latencies(library: Path, texts: list[str]) -> dict:
    """In-process text queries through the Library API, after one warm-up query."""
    from searchengine.library import Library

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
