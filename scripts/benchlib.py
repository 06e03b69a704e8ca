"""What the benchmarks share: synthetic vectors, photos and libraries, the random-weight model, the CLI in a new
process, and measuring (rates, percentiles, memory and CPU of a process tree, the last line of JSON).

Scripts run with the project's venv (`.venv/bin/python scripts/NAME.py`), where the project is installed
(editable), and import this module as a sibling: Python puts a script's own folder first on sys.path.
Everything generated (photos, model, libraries) goes under WORK (.bench/, git-ignored) and is reused.
"""
from __future__ import annotations

import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from indexer.cpu import usable_cores

if TYPE_CHECKING:
    from http.client import HTTPConnection

    from PIL import Image

    from indexer.catalog.store import Catalog, StoredImage

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".bench"
CORES = usable_cores()
DIM = 512
K = 10
T = TypeVar("T")


# ---------------------------------------------------------------- synthetic CLIP-like vectors

def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, q: int, dim: int = DIM, seed: int = 0, out: np.ndarray | None = None,
              chunk: int = 100_000, draw_seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, dim), text-like queries (q, dim)), float32 unit rows with CLIP's geometry.

    Image embeddings share a strong common direction, belong to one of 64 broad topics and to one of 4000
    Gaussian clusters with log-normal sizes; a point is its cluster centre plus isotropic noise, normalised
    (nearest-image cosine ~0.77, mean pair cosine ~0.38). A text query is a cluster centre pulled towards a shared
    "modality offset" direction plus noise, normalised, so its best image sits at cosine ~0.33 (mean ~0.14), as
    CLIP text queries do. `out` (an (n, dim) float32 array, e.g. a memory-mapped file larger than RAM) is filled
    `chunk` rows at a time instead of a new array. `draw_seed` draws the points (and queries) afresh from the
    same geometry (the seed's directions, topics and clusters): more points of the same collection.
    """
    rng = np.random.default_rng(seed)
    common, offset = unit(rng.standard_normal((2, dim)))
    topics = unit(rng.standard_normal((64, dim)))
    centres = unit(1.3 * common + 0.8 * topics[rng.integers(0, 64, 4000)] + unit(rng.standard_normal((4000, dim))))
    weights = rng.lognormal(0.0, 1.0, len(centres))
    weights /= weights.sum()
    if draw_seed is not None:
        rng = np.random.default_rng(draw_seed)
    images = np.empty((n, dim), np.float32) if out is None else out
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(0.6 / np.sqrt(dim))
        images[start:stop] = unit(centres[rng.choice(len(centres), stop - start, p=weights)] + noise)
    noise = rng.standard_normal((q, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    queries = unit(0.5 * centres[rng.choice(len(centres), q, p=weights)] + offset + noise)
    return images, queries


def synthetic_segments(videos: int, per_video: int, dim: int = DIM, seed: int = 0, draw_seed: int = 1,
                       noise: float = 0.4) -> np.ndarray:
    """(videos * per_video, dim) float32 unit rows: the moments of `videos` videos, video v's in rows
    v * per_video ... (v + 1) * per_video - 1.

    Each video has a centre drawn like a photo of synthetic(seed)'s collection (`draw_seed` keeps them apart from
    its photos), and each of its moments is that centre plus isotropic noise of norm ~`noise`, normalised: moments
    of one video resemble each other more than photos of one cluster do (with 0.4: cosine ~0.93 to the centre,
    ~0.86 between two moments, against ~0.74 between photos of a cluster), as frames of one video do. So when one
    moment ranks high, so do its siblings, which a search that shows a video once must skip over.
    """
    centres, _ = synthetic(videos, 0, dim, seed=seed, draw_seed=draw_seed)
    rng = np.random.default_rng((seed, draw_seed))
    out = np.empty((videos * per_video, dim), np.float32)
    for v in range(videos):
        spread_ = rng.standard_normal((per_video, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
        out[v * per_video:(v + 1) * per_video] = unit(centres[v] + spread_)
    return out


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of `exact` (top-k ids) found in the same row of `approx`."""
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact)]))


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


WHEN = ("at dawn", "at noon", "at dusk", "at night", "in winter", "in spring", "in summer", "in autumn",
        "in the rain", "in the fog", "in the snow", "on a sunny day")


def many_query_texts(count: int, seed: int) -> list[str]:
    """Up to 46,080 distinct queries (query_texts' with a time or weather: 6-11 words), for load tests that
    must never ask the same text twice."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    texts: list[str] = []
    while len(texts) < count:
        text = f"a {rng.choice(SUBJECTS)} {rng.choice(ACTIONS)} {rng.choice(PLACES)} {rng.choice(WHEN)}"
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


# ---------------------------------------------------------------- photos

PHOTO_SIZE = (4000, 3000)  # camera-sized
SMALL_PHOTO = (640, 480)  # for libraries, where only the number of photos matters
ORIENTATION_BY_SEED_MOD_5 = {1: 6, 2: 8, 3: 3}  # the rest are upright with no tag


def make_photo(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """Photo-like content: smooth gradient, blotches, hard-edged shapes, fine gratings and sensor grain."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    img = _backdrop(rng, w, h)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 20))):
        _shape(draw, rng, w, h)
    arr = np.asarray(img).astype(np.int16)
    for _ in range(int(rng.integers(2, 5))):
        _grating(arr, rng)
    arr += rng.integers(-6, 7, (h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _backdrop(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    from PIL import Image

    sw, sh = w // 16, h // 16
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xx / sw + np.sin(angle) * yy / sh
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    blotches = rng.normal(0, 1, (sh // 8 + 1, sw // 8 + 1, 3))
    blotches = Image.fromarray(np.uint8(np.clip(128 + 30 * blotches, 0, 255))).resize((sw, sh), Image.BICUBIC)
    base = c0 + t[..., None] * (c1 - c0) + np.asarray(blotches, np.float32) - 128
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)


def _shape(draw: Any, rng: np.random.Generator, w: int, h: int) -> None:
    x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.2, 1.0) * h
    box = [x0, y0, x0 + rng.uniform(0.05, 0.5) * w, y0 + rng.uniform(0.05, 0.5) * h]
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    kind = rng.integers(0, 3)
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(3)], fill=colour)


def _grating(arr: np.ndarray, rng: np.random.Generator) -> None:
    h, w = arr.shape[:2]
    x0, y0 = int(rng.uniform(0, 0.8) * w), int(rng.uniform(0, 0.8) * h)
    pw, ph = min(int(rng.uniform(0.05, 0.25) * w), w - x0), min(int(rng.uniform(0.05, 0.25) * h), h - y0)
    period, angle = rng.uniform(2.5, 12), rng.uniform(0, np.pi)
    gy, gx = np.mgrid[0:ph, 0:pw]
    wave = 40 * np.sin(2 * np.pi * (np.cos(angle) * gx + np.sin(angle) * gy) / period)
    arr[y0:y0 + ph, x0:x0 + pw] += wave[..., None].astype(np.int16)


def photo_jpeg(seed: int, size: tuple[int, int] = PHOTO_SIZE, exif: Any = None) -> bytes:
    """make_photo(seed) as a quality-90 JPEG; `exif` (a PIL Image.Exif) or, by default, only an orientation tag
    for three seeds in five."""
    from PIL import Image

    if exif is None:
        exif = Image.Exif()
        if seed % 5 in ORIENTATION_BY_SEED_MOD_5:
            exif[0x0112] = ORIENTATION_BY_SEED_MOD_5[seed % 5]
    buf = io.BytesIO()
    make_photo(seed, size).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def _write_photo(path: Path, seed: int, size: tuple[int, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(photo_jpeg(seed, size))
    tmp.rename(path)


def write_photos(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = PHOTO_SIZE) -> list[Path]:
    """photo_00000.jpg ... in `folder`: photo_jpeg(seed * 100_003 + k) for the k-th, the missing ones generated
    (on every core when there are many)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{k:05d}.jpg" for k in range(count)]
    missing = [k for k, p in enumerate(paths) if not p.exists()]
    if len(missing) > 2 * CORES:
        print(f"generating {len(missing)} photos in {folder} ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(CORES, mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_photo, [paths[k] for k in missing], [seed * 100_003 + k for k in missing],
                          [size] * len(missing)))
    for k in missing:
        if not paths[k].exists():
            _write_photo(paths[k], seed * 100_003 + k, size)
    return paths


def photo_set(photos: Sequence[Path], count: int, work: Path) -> Path:
    """A folder holding (hard links to) the first `count` photos."""
    folder = work / f"set-{count}"
    if folder.exists() and len(list(folder.iterdir())) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for photo in photos[:count]:
        try:
            os.link(photo, folder / photo.name)
        except OSError:
            shutil.copyfile(photo, folder / photo.name)
    return folder


# ---------------------------------------------------------------- the model and the CLI

def random_model(work: Path = WORK) -> Path:
    """The random-weight ViT-B-32 folder (for `--model local-dir:PATH`) the benchmarks index with, built once.
    Speed does not depend on the weights, so pipeline and query figures are honest with random ones."""
    from indexer.model.random_weights import build_random_model

    return build_random_model(work / "random-vit-b-32", "ViT-B-32")


SEARCHENGINE = [sys.executable, "-m", "searchengine"]


def cli_env(**extra: str) -> dict[str, str]:
    """A user's environment for the CLI: offline, and Python caching compiled modules as an installed package
    does (some sandboxes set PYTHONDONTWRITEBYTECODE, which would charge every query ~50 ms of recompiling)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def cli(*args: Any, check: bool = True) -> subprocess.CompletedProcess:
    """`searchengine ARGS` in a new process, its output captured (text)."""
    return subprocess.run([*SEARCHENGINE, *map(str, args)], check=check, capture_output=True, text=True,
                          env=cli_env())


def with_child_cpu(run: Callable[[], T]) -> tuple[T, float, float]:
    """run()'s result, its wall seconds, and the CPU seconds (user + system) of the child processes it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


class Server:
    """`searchengine serve --port 0` on a library, in a new process; stopped with Ctrl-C."""

    def __init__(self, library: Path, tree: Path | None = None):
        """`tree`: serve that checkout's code instead (`python -m` imports from the cwd first)."""
        self.library = library
        self.proc = subprocess.Popen([*SEARCHENGINE, "serve", "--library", str(library), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                                     cwd=tree or ROOT)
        line = self.proc.stdout.readline()
        found = re.search(r"http://localhost:(\d+)/", line)
        if not found:
            raise RuntimeError(f"serve did not start: {line} {self.proc.stderr.read()}")
        self.port = int(found.group(1))
        self.url = f"http://localhost:{self.port}/"

    def connection(self) -> HTTPConnection:
        from http.client import HTTPConnection

        return HTTPConnection("localhost", self.port, timeout=60)

    def stop(self) -> None:
        self.proc.send_signal(2)
        self.proc.wait(60)


# ---------------------------------------------------------------- synthetic libraries

def synthetic_catalog(path: Path, dim: int = DIM) -> Catalog:
    """A new, empty catalog file (the product's schema) for rows with synthetic embeddings: no model, no files."""
    from indexer.catalog.store import Catalog

    path.parent.mkdir(parents=True, exist_ok=True)
    return Catalog.create(path, {"model": "synthetic", "pretrained": "", "dim": str(dim)})


def write_rows(catalog: Catalog, count: int, row: Callable[[int], StoredImage], chunk: int = 5000) -> None:
    """Rows row(0) ... row(count - 1) through Catalog.apply, the product's own write path, `chunk` per transaction."""
    from indexer.catalog.store import BatchWrite

    for start in range(0, count, chunk):
        catalog.apply(BatchWrite(stored=[row(k) for k in range(start, min(count, start + chunk))]))


def stub_files(folder: Path, count: int, per_folder: int = 1000, suffix: str = ".jpg") -> list[bytes]:
    """Paths of `count` empty files, `per_folder` to a subfolder. A search leaves out hits whose files are gone,
    so the rows of a synthetic library must point at files that exist for its figures to be a real library's."""
    paths = []
    for k in range(count):
        sub = folder / f"{k // per_folder:04d}"
        if k % per_folder == 0:
            sub.mkdir(parents=True, exist_ok=True)
        path = os.fsencode(sub / f"{k:08d}{suffix}")
        open(path, "wb").close()
        paths.append(path)
    return paths


SEGMENTS_PER_VIDEO = 50
SEGMENT_S = 6.0  # each synthetic moment's length: a 50-moment video lasts 5 minutes


def write_videos(catalog: Catalog, paths: Sequence[bytes], vectors: np.ndarray, per_video: int = SEGMENTS_PER_VIDEO,
                 chunk: int = 5000) -> None:
    """Video k = paths[k] with the moments vectors[k * per_video:(k + 1) * per_video] (consecutive SEGMENT_S-long
    moments, each shown by its middle frame), through Catalog.apply(BatchWrite(videos=...)), the product's own
    write path, about `chunk` moments per transaction."""
    from indexer.catalog.moves import StoredSegment
    from indexer.catalog.records import BatchWrite, StoredVideo, VideoFacts

    facts = VideoFacts(duration_s=per_video * SEGMENT_S, fps=30.0, codec="h264")
    per_batch = max(1, chunk // per_video)
    for start in range(0, len(paths), per_batch):
        videos = []
        for k in range(start, min(len(paths), start + per_batch)):
            segments = [StoredSegment(j, j * SEGMENT_S, (j + 1) * SEGMENT_S, (j + 0.5) * SEGMENT_S,
                                      vectors[k * per_video + j]) for j in range(per_video)]
            videos.append(StoredVideo(paths[k], 1, 1, b"v%015d" % k, facts, segments))
        catalog.apply(BatchWrite(videos=videos))


def grown_library(work: Path, images: int, name: str, seed: int = 0, segments: int = 0,
                  per_video: int = SEGMENTS_PER_VIDEO) -> tuple[Path, list[Path]]:
    """(library, its indexed photos): made as a user makes one (`searchengine index` over 8 generated photos with
    the random ViT-B-32, which also exports the text tower), grown to `images` rows of synthetic CLIP-like
    embeddings whose paths are empty stub files (encoding 100k real photos takes hours here, and query cost does
    not depend on where the vectors came from), then a writer run (`index` again) that chooses and trains the
    index for that size, as after a user's own run. Built once under work/NAME-IMAGES and reused.

    `segments` adds that many video moments besides: ceil(segments / per_video) stub .mp4 files, `per_video`
    moments each (synthetic_segments: a video's moments near each other, in the photos' geometry), written as
    videos through the catalog; such a library lives under work/NAME-IMAGES-SEGMENTSseg. Its photo rows are
    the photo-only library's, so the two differ by the videos alone."""
    from indexer.catalog.store import Catalog, StoredImage

    base = work / (f"{name}-{images}" + (f"-{segments}seg" if segments else ""))
    library, done = base / "library", base / "complete"
    photos = write_photos(base / "photos", 8, seed, SMALL_PHOTO)
    if done.exists():
        return library, photos
    shutil.rmtree(library, ignore_errors=True)
    shutil.rmtree(base / "stubs", ignore_errors=True)
    shutil.rmtree(base / "video-stubs", ignore_errors=True)
    cli("index", base / "photos", "--library", library, "--model", f"local-dir:{random_model(work)}")
    extra = max(0, images - len(photos))
    catalog = Catalog.open(library / "catalog.sqlite", writable=True)
    try:
        dim = int(catalog.meta()["dim"])
        vectors, _ = synthetic(extra, 0, dim, seed=7)
        paths = stub_files(base / "stubs", extra)
        write_rows(catalog, extra, lambda k: StoredImage(paths[k], 1, 1, b"%016d" % k, vectors[k]))
        del vectors
        if segments:
            videos = -(-segments // per_video)
            moments = synthetic_segments(videos, per_video, dim, seed=7, draw_seed=8)[:segments]
            video_paths = stub_files(base / "video-stubs", videos, suffix=".mp4")
            full, rest = divmod(segments, per_video)
            write_videos(catalog, video_paths[:full], moments[:full * per_video], per_video)
            if rest:  # the last video has fewer moments
                write_videos(catalog, video_paths[full:], moments[full * per_video:], rest)
    finally:
        catalog.close()
    cli("index", base / "photos", "--library", library)
    done.touch()
    return library, photos


def photo_library(work: Path, count: int, seed: int = 3) -> Path:
    """A library of `count` generated photos indexed by `searchengine index` (random ViT-B-32), built once."""
    base = work / f"photos-{count}"
    library = base / "library"
    if (base / "complete").exists():
        return library
    shutil.rmtree(library, ignore_errors=True)
    write_photos(base / "photos", count, seed, SMALL_PHOTO)
    cli("index", base / "photos", "--library", library, "--model", f"local-dir:{random_model(work)}")
    (base / "complete").touch()
    return library


# ---------------------------------------------------------------- measuring

def rate(step: Callable[[], Any], per_step: int, min_steps: int = 2, min_seconds: float = 4.0) -> float:
    """Items per second of step() (each doing `per_step` items), after one warm-up call: at least `min_steps`
    calls and `min_seconds`."""
    step()
    done, started = 0, time.perf_counter()
    while done < min_steps * per_step or time.perf_counter() - started < min_seconds:
        step()
        done += per_step
    return done / (time.perf_counter() - started)


def per_item_seconds(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    """Mean seconds of fn(item) over `items`, one after another (one core)."""
    started = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - started) / len(items)


def percentiles(times_ms: Sequence[float], digits: int = 2) -> dict[str, float]:
    return {"p50_ms": round(float(np.median(times_ms)), digits),
            "p95_ms": round(float(np.percentile(times_ms, 95)), digits)}


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def emit(figures: dict, width: int | None = None) -> dict:
    """Print the figures, one `key value` line each when `width` (the key column) is given, then all of them as
    one JSON object: the last line, which the figures in docs/ come from."""
    if width:
        for key, value in figures.items():
            print(f"{key:<{width}} {value}")
    print(json.dumps(figures), flush=True)
    return figures


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """A process's memory in MB from /proc: VmRSS (resident), RssAnon (its own), RssFile (mapped file pages: page
    cache the kernel takes back under pressure), VmHWM (peak resident); {} when the process is gone."""
    fields = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class TreeWatch:
    """Samples a process tree: its peak summed memory (`field` of memory_mb) in MB, its CPU time, and the machine's.

    `foreign` is the share of the machine's CPU that other processes used meanwhile: 0 on a quiet machine;
    figures measured with a large share are skewed by whatever else ran.
    """

    def __init__(self, pid: int, interval: float = 0.25, field: str = "VmRSS"):
        # VmRSS, not smaps_rollup's PSS: walking a 2 GB process's page tables ten times a second slowed a run by 15%
        self.pid, self.interval, self.field, self.peak_mb = pid, interval, field, 0.0
        self._first = {p: ticks for p, (_, ticks) in _process_table().items()}
        self._last: dict[int, int] = {}
        self._busy0, self._wall0 = _machine_busy_ticks(), time.perf_counter()
        self.foreign = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> TreeWatch:
        self._stop.set()
        self._thread.join()
        self._sample()
        ticks = os.sysconf("SC_CLK_TCK")
        own = sum(last - self._first.get(p, 0) for p, last in self._last.items()) / ticks
        busy = (_machine_busy_ticks() - self._busy0) / ticks
        self.foreign = max(0.0, busy - own) / ((time.perf_counter() - self._wall0) * CORES)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        table = _process_table()
        tree = _descendants(self.pid, table)
        self._last.update({p: table[p][1] for p in tree if p in table})
        self.peak_mb = max(self.peak_mb, sum(memory_mb(p).get(self.field, 0.0) for p in tree))


def _process_table() -> dict[int, tuple[int, int]]:
    """pid: (parent pid, user + system CPU ticks), for every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                continue
    return table


def _descendants(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _machine_busy_ticks() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def foreign_share(fn: Callable[[], T]) -> tuple[T, float]:
    """fn()'s result and the share of the machine's CPU that other processes used while it ran: the machine's busy
    time (/proc/stat) less this process's and its waited-for children's (rusage). Unlike `watched`, no sampling
    thread runs beside fn, so in-process timings stay undisturbed; children still running at the end count as
    foreign."""
    def own() -> float:
        mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime

    busy, cpu, started = _machine_busy_ticks(), own(), time.perf_counter()
    result = fn()
    busy = (_machine_busy_ticks() - busy) / os.sysconf("SC_CLK_TCK")
    return result, max(0.0, busy - (own() - cpu)) / ((time.perf_counter() - started) * CORES)


def watched(fn: Callable[[], T]) -> tuple[T, float]:
    """fn()'s result and the foreign CPU share while it ran in this process (and its children)."""
    watch = TreeWatch(os.getpid(), interval=0.5)
    result = fn()
    return result, watch.stop().foreign


# ---------------------------------------------------------------- `searchengine index`, end to end

@dataclass
class IndexRun:
    seconds: float
    peak_mb: float
    foreign: float
    report: dict


def run_index(folder: Path, model_dir: Path, library: Path, extra: Sequence[str] = ()) -> IndexRun:
    """`searchengine index --json` on a fresh library; wall time includes start-up, which the steady state cancels."""
    shutil.rmtree(library, ignore_errors=True)
    command = [*SEARCHENGINE, "index", "--library", str(library), "--model", f"local-dir:{model_dir}",
               str(folder), "--json", *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    watch = TreeWatch(process.pid)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    watch.stop()
    if process.returncode != 0:
        raise RuntimeError(f"index failed ({process.returncode}): {err.decode(errors='replace').strip()[-500:]}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    shutil.rmtree(library, ignore_errors=True)  # each holds a copy of the text tower: hundreds of MB
    return IndexRun(seconds, watch.peak_mb, watch.foreign, report)


def index_steady_ips(photos: Sequence[Path], n: int, model_dir: Path, work: Path,
                     extra: Sequence[str] = ()) -> tuple[float, IndexRun, IndexRun]:
    """Steady-state images/s of `index`: 3N / (t(4N) - t(N)) over runs on fresh libraries, which cancels start-up;
    and the two runs."""
    small, large = photo_set(photos, n, work), photo_set(photos, 4 * n, work)
    first = run_index(small, model_dir, work / "library-n", extra)
    second = run_index(large, model_dir, work / "library-4n", extra)
    for run, count in ((first, n), (second, 4 * n)):
        if run.report.get("added") != count:
            raise RuntimeError(f"index added {run.report.get('added')} of {count} photos: {run.report}")
    return 3 * n / (second.seconds - first.seconds), first, second
