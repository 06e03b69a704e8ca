"""Generated photo folders and an indexed photo library for bench_serve (no imports from tests/)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def picture(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """Smooth colour fields and a block, different per seed (JPEG-friendly, like photos)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base, freq = rng.uniform(0, 255, 3), rng.uniform(0.005, 0.05, 3)
    img = np.stack([(base[c] + 90 * np.sin(freq[c] * (x + 1.7 * y) + c)) % 256 for c in range(3)], axis=-1)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0, 255, 3)
    return Image.fromarray(img.astype(np.uint8), "RGB")


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"photo{k:05d}.jpg"
        if not path.exists():
            picture(seed * 100_003 + k).save(path, quality=88)
        paths.append(path)
    return paths


def photo_library(work: Path, count: int) -> Path:
    """A library of `count` generated photos indexed by `searchengine index` (random ViT-B-32), built once."""
    from random_model import build_random_model

    library = work / f"serve-library-{count}"
    if (library / "catalog.sqlite").exists():
        return library
    model = build_random_model(work / "random-vit-b-32")
    photos = work / f"serve-photos-{count}"
    write_photos(photos, count, seed=3)
    subprocess.run([sys.executable, "-m", "searchengine", "index", str(photos), "--library", str(library),
                    "--model", f"local-dir:{model}"], check=True, env=dict(os.environ, HF_HUB_OFFLINE="1",
                                                                             PYTHONPATH=str(ROOT)))
    return library


def synthetic_library(work: Path, count: int) -> Path:
    """A library made by `searchengine index` over 8 photos, grown to `count` with synthetic clustered embeddings
    (as bench_search's query_latency does) whose paths are empty files that exist: searches skip hits whose
    files are gone, so the rows must point at something."""
    import numpy as np

    from indexer.catalog.store import BatchWrite, Catalog, StoredImage
    from random_model import build_random_model

    library, photos = work / f"serve-synthetic-library-{count}", work / f"serve-synthetic-photos-{count}"
    if (library / "catalog.sqlite").exists():
        return library
    model = build_random_model(work / "random-vit-b-32")
    write_photos(photos, 8, seed=1)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-m", "searchengine", "index", str(photos), "--library", str(library),
                    "--model", f"local-dir:{model}"], check=True, env=env)
    stubs = work / f"serve-synthetic-stubs-{count}"
    stubs.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(library / "catalog.sqlite", writable=True)
    dim = int(catalog.meta()["dim"])
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((max(1, count // 200), dim)).astype(np.float32)
    for start in range(0, count - 8, 5000):
        n = min(5000, count - 8 - start)
        vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        paths = [os.fsencode(stubs / f"{start + i:08d}.jpg") for i in range(n)]
        for path in paths:
            open(path, "wb").close()
        catalog.apply(BatchWrite(stored=[StoredImage(p, 0, 0, b"%016d" % (start + i), v)
                                         for i, (p, v) in enumerate(zip(paths, vectors))]))
    catalog.close()
    subprocess.run([sys.executable, "-m", "searchengine", "index", str(photos), "--library", str(library)],
                   check=True, env=env)  # a writer run chooses (and trains) the index for this size
    return library
