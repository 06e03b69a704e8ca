"""What reading metadata costs an index run, on camera-sized JPEGs carrying a full camera EXIF block.

Usage:  .venv/bin/python scripts/bench_metadata.py [--n 16] [--repeat 5]

Per image, one core, interleaved runs (min over repeats, the machine may be busy):
  decode       decode + preprocess for the model, as before metadata (decode_for_index, with_metadata=False)
  decode+meta  the same open also reading the metadata (what index workers do now)
  extract      read_metadata alone on an image already opened: the work the decode path adds
  header       header-only read (copies whose embedding is reused; the fill-in of old rows)
  store        committing a batch of 32 rows to the catalog, without and with the metadata columns
The share of throughput is the added worker time over the decode time (decoding is the workers' whole job,
and on 2 cores workers and the model share the CPU) plus the added commit time over the per-image time the
index run measured (README: 17.9 images/s). The last line is JSON.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
from PIL import Image

from indexer.catalog import writes
from indexer.catalog.store import StoredImage
from indexer.images.decode import PreprocessConfig, decode_for_index
from indexer.images.metadata import header_metadata, read_metadata
from indexer.model.random_weights import OPENAI_MEAN, OPENAI_STD

CFG = PreprocessConfig(224, tuple(OPENAI_MEAN), tuple(OPENAI_STD))  # ViT-B-32's
INDEX_IMAGES_PER_S = 17.9  # README, bench_index steady state on the reference machine
REFERENCE_DECODE_MS = 32.7  # README, best decode on the reference machine: the share against it is the larger one


def camera_jpeg(seed: int) -> bytes:
    """A 4000x3000 JPEG with the EXIF a phone or camera writes (dates, camera, lens, GPS, 30 KB maker note)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Canon", "Canon EOS R5", [1, 6, 8, 3][seed % 4]
    sub = exif.get_ifd(0x8769)
    sub[0x9003], sub[0x9011], sub[0xA434] = "2023:06:14 10:00:00", "+02:00", "RF24-70mm F2.8 L IS USM"
    sub[0x927C] = bytes(30_000)
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 23.64), 3: "E", 4: (2.0, 21.0, 7.9)})
    return benchlib.photo_jpeg(seed, exif=exif)


def per_item_ms(fn, datas: list[bytes]) -> float:
    return 1000 * benchlib.per_item_seconds(fn, datas)


def extraction_ms(datas: list[bytes]) -> float:
    """Only the added work: read_metadata on an image already opened (the decode path opens it anyway)."""
    total = 0.0
    for data in datas:
        img = Image.open(io.BytesIO(data))
        start = time.perf_counter()
        read_metadata(img)
        total += time.perf_counter() - start
        img.close()
    return 1000 * total / len(datas)


def store_ms(folder: Path, rows: int, with_metadata: bool, meta) -> float:
    """Per-row time to commit batches of 32 rows (paths new each time)."""
    path = folder / f"catalog-{with_metadata}-{time.monotonic_ns()}.sqlite"
    catalog = benchlib.synthetic_catalog(path)
    vectors = np.random.default_rng(0).standard_normal((rows, 512)).astype(np.float32)
    real = writes.write_metadata
    if not with_metadata:
        writes.write_metadata = lambda *args: None  # the code before metadata
    try:
        start = time.perf_counter()
        benchlib.write_rows(catalog, rows, lambda k: StoredImage(b"/p/%08d.jpg" % k, 1, 1, os.urandom(16), vectors[k],
                                                                 metadata=meta), chunk=32)
        return 1000 * (time.perf_counter() - start) / rows
    finally:
        writes.write_metadata = real
        catalog.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="photos")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2048, help="catalog rows per store measurement")
    args = parser.parse_args(argv)
    datas = [camera_jpeg(seed) for seed in range(args.n)]
    meta = header_metadata(datas[0]).with_mtime_fallback(0)
    times: dict[str, list[float]] = {"decode": [], "decode+meta": [], "extract": [], "header": [], "store": [],
                                     "store+meta": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            times["decode"].append(per_item_ms(lambda d: decode_for_index(d, CFG, with_metadata=False), datas))
            times["decode+meta"].append(per_item_ms(lambda d: decode_for_index(d, CFG, with_metadata=True), datas))
            times["header"].append(per_item_ms(header_metadata, datas))
            times["extract"].append(extraction_ms(datas))
            times["store"].append(store_ms(Path(tmp), args.rows, False, meta))
            times["store+meta"].append(store_ms(Path(tmp), args.rows, True, meta))
    best = {k: min(v) for k, v in times.items()}
    # The difference of two noisy decode timings can come out negative on a busy machine; the extraction timed
    # on its own is the added work itself.
    worker_share = best["extract"] / min(best["decode"], REFERENCE_DECODE_MS)
    commit_share = (best["store+meta"] - best["store"]) / (1000 / INDEX_IMAGES_PER_S)
    result = {"n": args.n, "repeat": args.repeat, **{f"{k}_ms": round(v, 3) for k, v in best.items()},
              "metadata_ms_per_image": round(best["decode+meta"] - best["decode"], 3),
              "worker_share": round(worker_share, 4), "commit_share": round(commit_share, 4),
              "throughput_cost": round(max(worker_share, 0) + max(commit_share, 0), 4),
              "exif_bytes": len(Image.open(io.BytesIO(datas[0])).info.get("exif", b""))}
    return benchlib.emit(result, width=24)

if __name__ == "__main__":
    main()
