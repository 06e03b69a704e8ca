"""Indexing throughput and fidelity benchmark on camera-sized JPEGs with a random-weight ViT-B-32.

Usage:  .venv/bin/python scripts/bench_index.py [--n 48] [--repeat 3] [--folder DIR] [--explore] [--device cuda]

Measures in one run: (a) the model's pure forward rate, (b) the best decode (draft JPEG decode + preprocess,
one core), the limit 1 / (1/pure + decode/cores), (c) the naive loop (open_clip's reference preprocess, then
encode, batched), (d) `searchengine index` end to end, steady state = 3N / (t(4N) - t(N)), fresh library each,
(e) fidelity of decode_and_preprocess to the reference path in embedding space, (f) the index run's peak memory.
--explore adds the figures that guide the pipeline's design (batch sizes, threads, worker overlap, int8).
--device D (cuda, cuda:N, mps, or cpu to try the code path) adds a "device" section: the product's image
encoder's forward-only rate on D (in the precision it chose after its check on these photos), the decode limit
(cores / decode time), the `index --device D` rate and its ratio to min(forward, decode limit) (goal >= 0.85),
and the fidelity of D's embeddings to the CPU fp32 path (worst 1-cos over the mean 1-cos between photos).
Photos (4000x3000, quality 90, some EXIF-rotated) and the model are generated once under .bench/ (git-ignored).
Prints a table; the last line is JSON. Speed does not depend on the weights, so random ones are honest here.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from indexer.cpu import usable_cores  # noqa: E402
from indexer.images.decode import PreprocessConfig, decode_and_preprocess, load_rgb, preprocess  # noqa: E402

PHOTO_SIZE = (4000, 3000)
ORIENTATION_BY_INDEX_MOD_5 = {1: 6, 2: 8, 3: 3}  # the rest are upright with no tag
CORES = usable_cores()


# ---------------------------------------------------------------- photos and model

def make_photo(seed: int, size: tuple[int, int] = PHOTO_SIZE) -> Image.Image:
    """Photo-like content: smooth gradient, blotches, hard-edged shapes, fine gratings and sensor grain."""
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


def _shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
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


def write_photo(path: Path, seed: int) -> None:
    exif = Image.Exif()
    orientation = ORIENTATION_BY_INDEX_MOD_5.get(seed % 5)
    if orientation:
        exif[0x0112] = orientation
    tmp = path.with_suffix(".tmp")
    make_photo(seed).save(tmp, "JPEG", quality=90, exif=exif.tobytes())
    tmp.rename(path)


def ensure_photos(folder: Path, count: int) -> list[Path]:
    """The first `count` cached benchmark photos, generating the missing ones on every core."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo_{i:04d}.jpg" for i in range(count)]
    missing = [i for i, p in enumerate(paths) if not p.exists()]
    if missing:
        print(f"generating {len(missing)} photos in {folder} ...", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(CORES, mp_context=get_context("spawn")) as pool:
            list(pool.map(write_photo, [paths[i] for i in missing], missing))
    return paths


def user_photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


def ensure_model(folder: Path) -> Path:
    from random_model import build_random_model

    return build_random_model(folder, "ViT-B-32")


@dataclass
class Model:
    """The benchmark's in-process model: open_clip module, its reference eval transform, our config."""

    net: Any
    reference: Callable[[Image.Image], Any]
    cfg: PreprocessConfig


def load_model(folder: Path) -> Model:
    import logging

    import open_clip

    from indexer.model.clip import _preprocess_config  # the product's reading of open_clip's eval settings

    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that the (random) weights are not pretrained
    net, _, reference = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    net.eval()
    return Model(net, reference, _preprocess_config(reference, net))


def encode(net: Any, batch: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        features = net.encode_image(torch.from_numpy(np.ascontiguousarray(batch))).float()
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ---------------------------------------------------------------- in-process measurements

def pure_forward_ips(net: Any, pixels: np.ndarray, batch: int, threads: int, min_seconds: float = 4.0) -> float:
    """Images/s of encode_image alone on preprocessed arrays (no I/O), after a warm-up batch."""
    set_threads(threads)
    reps = int(np.ceil(batch / len(pixels)))
    x = np.concatenate([pixels] * reps)[:batch]
    encode(net, x)
    done, started = 0, time.perf_counter()
    while done < 2 * batch or time.perf_counter() - started < min_seconds:
        encode(net, x)
        done += batch
    return done / (time.perf_counter() - started)


def decode_seconds(datas: list[bytes], fn: Callable[[bytes], Any]) -> float:
    """Mean seconds per image of `fn` on in-memory bytes, on one core."""
    started = time.perf_counter()
    for data in datas:
        fn(data)
    return (time.perf_counter() - started) / len(datas)


def naive_loop(paths: list[Path], model: Model, batch: int) -> tuple[float, np.ndarray]:
    """open_clip's reference path in a plain loop; images/s and its embeddings (the fidelity reference)."""
    import torch
    from PIL import ImageOps

    set_threads(CORES)
    rows, started = [], time.perf_counter()
    for start in range(0, len(paths), batch):
        tensors = []
        for path in paths[start:start + batch]:
            with Image.open(path) as img:
                tensors.append(model.reference(ImageOps.exif_transpose(img).convert("RGB")))
        rows.append(encode(model.net, torch.stack(tensors).numpy()))
    return len(paths) / (time.perf_counter() - started), np.concatenate(rows)


def our_embeddings(paths: list[Path], model: Model, batch: int) -> np.ndarray:
    """decode_and_preprocess, then encode: the project's path."""
    rows = []
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        rows.append(encode(model.net, np.stack([decode_and_preprocess(p.read_bytes(), model.cfg) for p in chunk])))
    return np.concatenate(rows)


def photo_set_fidelity(photos: list[Path], model: Model, head_reference: np.ndarray, batch: int) -> Fidelity:
    """Fidelity over every photo; the reference embeddings of the first ones come from the naive loop."""
    _, tail = naive_loop(photos[len(head_reference):], model, batch)
    return fidelity(our_embeddings(photos, model, batch), np.concatenate([head_reference, tail]))


def encode_all(net: Any, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([encode(net, pixels[i:i + batch]) for i in range(0, len(pixels), batch)])


@dataclass
class Fidelity:
    worst: float
    mean: float
    between: float

    @property
    def ratio(self) -> float:
        return self.worst / self.between


def fidelity(ours: np.ndarray, reference: np.ndarray) -> Fidelity:
    """Worst and mean (1 - cos) to the reference, and the mean (1 - cos) between different photos."""
    distance = 1.0 - (ours * reference).sum(axis=1)
    pairs = 1.0 - reference @ reference.T
    between = pairs[~np.eye(len(reference), dtype=bool)].mean()
    return Fidelity(float(distance.max()), float(distance.mean()), float(between))


# ---------------------------------------------------------------- end to end: the CLI

class TreeWatch:
    """Samples a process tree: its peak summed RSS in MB, its CPU time, and the machine's.

    `foreign` is the share of the machine's CPU that other processes used meanwhile: 0 on a quiet machine;
    figures measured with a large share are skewed by whatever else ran.
    """

    def __init__(self, pid: int, interval: float = 0.25):
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._first = {p: ticks for p, (_, ticks) in _process_table().items()}
        self._last: dict[int, int] = {}
        self._busy0, self._wall0 = _machine_busy_ticks(), time.perf_counter()
        self.foreign = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> "TreeWatch":
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
        self.peak_mb = max(self.peak_mb, sum(_memory_kb(p) for p in tree) / 1024)


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


def _memory_kb(pid: int) -> int:
    # VmRSS, not smaps_rollup's PSS: walking a 2 GB process's page tables ten times a second slowed the run by 15%
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def watched(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn()'s result and the foreign CPU share while it ran in this process (and its children)."""
    watch = TreeWatch(os.getpid(), interval=0.5)
    result = fn()
    return result, watch.stop().foreign


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "searchengine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "searchengine"]


def photo_set(photos: list[Path], count: int, work: Path) -> Path:
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


@dataclass
class IndexRun:
    seconds: float
    peak_mb: float
    foreign: float
    report: dict


def run_index(folder: Path, model_dir: Path, library: Path, extra: list[str]) -> IndexRun:
    """`searchengine index` on a fresh library; wall time includes start-up, which the steady state cancels."""
    shutil.rmtree(library, ignore_errors=True)
    command = cli_command() + ["index", "--library", str(library), "--model", f"local-dir:{model_dir}",
                               str(folder), "--json", *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=os.environ | {"HF_HUB_OFFLINE": "1"})
    watch = TreeWatch(process.pid)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    watch.stop()
    if process.returncode != 0:
        raise RuntimeError(f"index failed ({process.returncode}): {err.decode(errors='replace').strip()[-500:]}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    shutil.rmtree(library, ignore_errors=True)  # each holds a copy of the text tower: hundreds of MB
    return IndexRun(seconds, watch.peak_mb, watch.foreign, report)


def index_steady_ips(photos: list[Path], n: int, model_dir: Path, work: Path,
                     extra: list[str]) -> tuple[float, IndexRun, IndexRun]:
    small, large = photo_set(photos, n, work), photo_set(photos, 4 * n, work)
    first = run_index(small, model_dir, work / "library-n", extra)
    second = run_index(large, model_dir, work / "library-4n", extra)
    for run, count in ((first, n), (second, 4 * n)):
        if run.report.get("added") != count:
            raise RuntimeError(f"index added {run.report.get('added')} of {count} photos: {run.report}")
    return 3 * n / (second.seconds - first.seconds), first, second


# ---------------------------------------------------------------- --explore: figures for the pipeline's design

def _plain_worker(catalog_path: str, cfg: PreprocessConfig) -> None:
    """The product's worker (indexer.pipeline.prepare) without its idle priority, to measure what that priority gives."""
    from indexer.pipeline import prepare

    prepare._worker = prepare.Preparer(catalog_path, cfg)


def _prepare(path: Path) -> np.ndarray:
    """What a pipeline worker does per file: the product's read, hash, reuse lookup, decode and preprocess."""
    from indexer.pipeline.plan import Task
    from indexer.pipeline.prepare import prepare_in_worker

    prepared = prepare_in_worker(Task(os.fsencode(path), None))
    assert prepared.pixels is not None, prepared.error
    return prepared.pixels


def scratch_catalog(folder: Path) -> str:
    """An empty catalog for the workers' reuse lookups (nothing found: every file is decoded)."""
    from indexer.catalog.store import Catalog

    path = folder / "explore-catalog.sqlite"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        Catalog.create(path, {"model": "bench", "pretrained": "", "dim": "512"}).close()
    return str(path)


def overlap_ips(paths: list[Path], model: Model, threads: int, workers: int, kind: str, batch: int) -> float:
    """A minimal pipeline: decode in a pool while this process encodes batches.

    kind: "process" (worker processes), "idle" (worker processes at idle priority) or "thread" (threads here).
    """
    from indexer.pipeline.prepare import init_worker

    set_threads(threads)
    catalog = scratch_catalog(ROOT / ".bench" / "work")
    if kind in ("process", "idle"):
        pool: Executor = ProcessPoolExecutor(workers, mp_context=get_context("forkserver"),
                                             initializer=init_worker if kind == "idle" else _plain_worker,
                                             initargs=(catalog, model.cfg))
    else:
        _plain_worker(catalog, model.cfg)
        pool = ThreadPoolExecutor(workers)
    with pool:
        list(pool.map(_prepare, paths[:workers]))  # start-up is not steady state
        started = time.perf_counter()
        inflight: deque = deque()
        pending: list[np.ndarray] = []
        for path in paths:
            inflight.append(pool.submit(_prepare, path))
            if len(inflight) >= 2 * batch:
                _take(inflight, pending, model.net, batch)
        while inflight:
            _take(inflight, pending, model.net, batch)
        if pending:
            encode(model.net, np.stack(pending))
        return len(paths) / (time.perf_counter() - started)


def _take(inflight: deque, pending: list[np.ndarray], net: Any, batch: int) -> None:
    pending.append(inflight.popleft().result())
    if len(pending) >= batch:
        encode(net, np.stack(pending))
        pending.clear()


def overlap_configs(threads_options: list[int]) -> list[tuple[int, int, str]]:
    """(torch threads, decode workers, kind) to compare."""
    configs = [(t, w, "process") for t in threads_options for w in threads_options]
    configs += [(CORES, w, "idle") for w in threads_options] + [(CORES, CORES, "thread")]
    return configs


def int8_model(net: Any) -> Any:
    """The model with the product's `--int8` image tower (indexer.model.clip.int8_tower returns a quantised copy)."""
    import copy

    from indexer.model.clip import int8_tower

    quantised = copy.copy(net)
    quantised._modules = dict(net._modules)  # a shallow copy would share the module table with `net`
    quantised.visual = int8_tower(net.visual)
    return quantised


def explore(photos: list[Path], model: Model, pixels: np.ndarray, fp32: np.ndarray, batch: int,
            repeat: int) -> dict:
    """Forward rate by batch and threads, worker overlap, int8; configs interleaved `repeat` times."""
    threads_options = sorted({1, CORES})
    measures: dict[str, Callable[[], float]] = {}
    for threads in threads_options:
        for size in (16, 32, 64):
            measures[f"forward_b{size}_t{threads}"] = functools.partial(
                pure_forward_ips, model.net, pixels, size, threads)
    for threads, workers, kind in overlap_configs(threads_options):
        measures[f"overlap_t{threads}_w{workers}_{kind}"] = functools.partial(
            overlap_ips, photos, model, threads, workers, kind, batch)
    samples: dict[str, list[tuple[float, float]]] = {key: [] for key in measures}
    for _ in range(repeat):
        for key, measure in measures.items():
            samples[key].append(watched(measure))
    figures: dict[str, Any] = {key: _explore_figure(v) for key, v in samples.items()}
    figures["int8"] = int8_figures(model.net, pixels, fp32, batch, repeat)  # also in the default summary
    return figures


def _explore_figure(samples: list[tuple[float, float]]) -> dict:
    """Median and max of (value, foreign CPU share) samples, and the value measured when the machine was quietest."""
    values = [v for v, _ in samples]
    quiet_value, quiet_foreign = min(samples, key=lambda sample: sample[1])
    return {"median": round(statistics.median(values), 2), "max": round(max(values), 2),
            "quietest": round(quiet_value, 2), "quietest_foreign": round(quiet_foreign, 3)}


def int8_figures(net: Any, pixels: np.ndarray, fp32: np.ndarray, batch: int, repeat: int) -> dict:
    """Dynamic int8 quantisation of the Linear layers: speed against fp32 (interleaved) and error to fp32."""
    quantised = int8_model(net)
    speedups = []
    for _ in range(repeat):
        ips_int8 = pure_forward_ips(quantised, pixels, batch, CORES)
        speedups.append(ips_int8 / pure_forward_ips(net, pixels, batch, CORES))
    error = fidelity(encode_all(quantised, pixels, batch), fp32)
    return {"speedup_median": round(statistics.median(speedups), 3), "speedup_min": round(min(speedups), 3),
            "speedup_max": round(max(speedups), 3), "worst_1_minus_cos": error.worst,
            "mean_1_minus_cos": error.mean, "worst_over_between": error.ratio}


# ---------------------------------------------------------------- main

@dataclass
class Round:
    """One repetition's speed figures, measured back to back."""

    pure_ips: float
    decode_s: float
    naive_ips: float
    index_ips: float | None = None
    peak_rss_mb: float | None = None
    cli_steady_ips: float | None = None  # from the CLI's own timing, which leaves out start-up
    wall_n_s: float | None = None
    wall_4n_s: float | None = None
    foreign: float = 0.0  # the largest share of CPU that other processes took during this round's measurements

    @property
    def limit_ips(self) -> float:
        return 1.0 / (1.0 / self.pure_ips + self.decode_s / CORES)


def one_round(args: argparse.Namespace, photos: list[Path], model: Model, datas: list[bytes],
              pixels: np.ndarray, model_dir: Path) -> tuple[Round, np.ndarray]:
    pure, foreign_pure = watched(lambda: pure_forward_ips(model.net, pixels, args.batch, CORES))
    decode, foreign_decode = watched(lambda: decode_seconds(datas, lambda d: decode_and_preprocess(d, model.cfg)))
    (naive, reference), foreign_naive = watched(lambda: naive_loop(photos[:args.n], model, args.batch))
    result = Round(pure, decode, naive, foreign=max(foreign_pure, foreign_decode, foreign_naive))
    if not args.skip_index:
        ips, first, second = index_steady_ips(photos, args.n, model_dir, args.cache / "work", args.index_args.split())
        result.index_ips, result.peak_rss_mb = ips, max(first.peak_mb, second.peak_mb)
        result.cli_steady_ips = 3 * args.n / (second.report["seconds"] - first.report["seconds"])
        result.wall_n_s, result.wall_4n_s = first.seconds, second.seconds
        result.foreign = max(result.foreign, first.foreign, second.foreign)
    return result, reference


def device_forward(model_dir: Path, device: str, pixels: np.ndarray, batch: int,
                   min_seconds: float = 4.0) -> tuple[float, str, str, np.ndarray]:
    """The product's encoder on `device`: forward-only images/s (host-device copies included, no decode),
    its label, the precision it settled on after its check, and its embeddings of `pixels`."""
    from indexer.model.device import device_label
    from indexer.model.clip import ModelSpec, load_model

    clip = load_model(ModelSpec.resolve(f"local-dir:{model_dir}", None), device=device,
                      notice=lambda m: print(f"device: {m}", file=sys.stderr))
    embeddings = np.concatenate([clip.encode_pixels(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])
    x = np.concatenate([pixels] * int(np.ceil(batch / len(pixels))))[:batch]
    clip.encode_pixels(x)  # warm-up (kernels, allocator) after the precision check above
    done, started = 0, time.perf_counter()
    while done < 4 * batch or time.perf_counter() - started < min_seconds:
        clip.encode_pixels(x)
        done += batch
    ips = done / (time.perf_counter() - started)
    return ips, device_label(clip.device), clip.compute_precision, embeddings


def device_figures(args: argparse.Namespace, model_dir: Path, pixels: np.ndarray, fp32: np.ndarray,
                   rounds: list[Round]) -> dict:
    from indexer.model.precision import judge

    forward, label, precision, embeddings = device_forward(model_dir, args.device, pixels, args.batch)
    decode_limit = CORES / statistics.median(r.decode_s for r in rounds)
    verdict = judge(fp32, embeddings)
    figures = {"device": label, "precision": precision, "forward_ips": round(forward, 2),
               "decode_limit_ips": round(decode_limit, 2), "limit_ips": round(min(forward, decode_limit), 2),
               "fidelity_worst_over_between": verdict.ratio if verdict else None,
               "fidelity_ok": verdict.ok if verdict else None, "goal_ratio": 0.85}
    if not args.skip_index:
        index_ips = statistics.median(r.index_ips for r in rounds)
        figures |= {"index_ips": round(index_ips, 2), "ratio_to_limit": round(index_ips / figures["limit_ips"], 4)}
    return figures


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(rounds: list[Round], fid: Fidelity, full_decode_s: float, args: argparse.Namespace) -> dict:
    pick = {
        "pure_ips": [r.pure_ips for r in rounds],
        "limit_ips": [r.limit_ips for r in rounds],
        "naive_ips": [r.naive_ips for r in rounds],
        "decode_ms": [1000 * r.decode_s for r in rounds],
        "foreign_cpu_share": [r.foreign for r in rounds],
    }
    if not args.skip_index:
        pick |= {"index_ips": [r.index_ips for r in rounds],
                 "ratio_limit": [r.index_ips / r.limit_ips for r in rounds],
                 "ratio_naive": [r.index_ips / r.naive_ips for r in rounds],
                 "peak_rss_mb": [r.peak_rss_mb for r in rounds],
                 "index_cli_timed_ips": [r.cli_steady_ips for r in rounds],
                 "index_wall_n_s": [r.wall_n_s for r in rounds],
                 "index_wall_4n_s": [r.wall_4n_s for r in rounds]}
    summary: dict[str, Any] = {k: round(spread(v)["median"], 4) for k, v in pick.items()}
    summary |= {"fidelity_worst": fid.ratio, "fidelity_worst_1_minus_cos": fid.worst,
                "fidelity_mean_1_minus_cos": fid.mean, "between_photos_1_minus_cos": fid.between,
                "fidelity_photos": 4 * args.n,
                "full_decode_ms": round(1000 * full_decode_s, 2), "n": args.n, "repeat": args.repeat,
                "cores": CORES, "batch": args.batch,
                "max_process_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                "loadavg_1min_at_end": os.getloadavg()[0],  # other work on the machine skews every figure
                "spread": {k: {s: round(x, 4) for s, x in spread(v).items()} for k, v in pick.items()}}
    if args.skip_index:
        summary["index_ips"] = None
    else:
        quietest = min(rounds, key=lambda r: r.foreign)
        summary["quietest_round"] = {"foreign_cpu_share": round(quietest.foreign, 3),
                                     "ratio_limit": round(quietest.index_ips / quietest.limit_ips, 4),
                                     "ratio_naive": round(quietest.index_ips / quietest.naive_ips, 4)}
    return summary


def print_table(summary: dict) -> None:
    print(f"{'figure':<28}{'median':>12}{'min':>12}{'max':>12}")
    for key, value in summary["spread"].items():
        print(f"{key:<28}{value['median']:>12.3f}{value['min']:>12.3f}{value['max']:>12.3f}")
    print(f"{'full_decode_ms':<28}{summary['full_decode_ms']:>12.2f}")
    print(f"{'fidelity_worst (<= 0.01)':<28}{summary['fidelity_worst']:>12.2e}"
          f"   worst 1-cos {summary['fidelity_worst_1_minus_cos']:.2e},"
          f" between photos {summary['between_photos_1_minus_cos']:.3f}")
    for key, value in summary.get("explore", {}).items():
        print(f"{key:<28}{json.dumps(value)}")
    for key, value in summary.get("device", {}).items():
        print(f"{'device ' + key:<36}{value}")
    if summary["spread"]["foreign_cpu_share"]["min"] > 0.1:
        print("WARNING: other processes used over 10% of the CPU in every round; speed figures are skewed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48,
                        help="images in the small index run (the large one is 4N); below ~48 start-up noise swamps it")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the speed measurements")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--folder", type=Path, help="use these JPEGs instead of generated photos (needs 4N)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".bench", help="photos, model and scratch libraries")
    parser.add_argument("--index-args", default="", help="extra `searchengine index` options, e.g. '--workers 1'")
    parser.add_argument("--skip-index", action="store_true", help="leave out the end-to-end CLI measurement")
    parser.add_argument("--explore", action="store_true", help="add batch/threads/workers/int8 figures")
    parser.add_argument("--device", default=None,
                        help="also measure this device (cuda, cuda:N, mps; cpu tries the code path); "
                             "`index` runs with --device D")
    args = parser.parse_args(argv)
    if args.device:
        args.index_args = f"{args.index_args} --device {args.device}".strip()
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    photos = user_photos(args.folder) if args.folder else ensure_photos(args.cache / "photos", 4 * args.n)
    if len(photos) < 4 * args.n:
        args.n = len(photos) // 4
        print(f"only {len(photos)} photos: N = {args.n}", file=sys.stderr)
    if args.n < 1:
        sys.exit("need at least 4 JPEGs")
    model_dir = ensure_model(args.cache / "models" / "ViT-B-32")
    model = load_model(model_dir)
    datas = [p.read_bytes() for p in photos[:args.n]]
    pixels = np.stack([decode_and_preprocess(d, model.cfg) for d in datas])
    if not args.skip_index:  # warm-up: file cache, bytecode, first-run costs
        warm = photo_set(photos, min(8, args.n), args.cache / "work")
        run_index(warm, model_dir, args.cache / "work" / "warm", args.index_args.split())
    rounds, reference = [], None
    for _ in range(args.repeat):
        result, reference = one_round(args, photos, model, datas, pixels, model_dir)
        rounds.append(result)
    full = decode_seconds(datas[:8], lambda d: preprocess(load_rgb(d), model.cfg))
    fid = photo_set_fidelity(photos[:4 * args.n], model, reference, args.batch)
    summary = summarise(rounds, fid, full, args)
    fp32 = encode_all(model.net, pixels, args.batch)
    summary["int8"] = int8_figures(model.net, pixels, fp32, args.batch, args.repeat)  # for `index --int8`
    if args.explore:
        summary["explore"] = explore(photos[:args.n], model, pixels, fp32, args.batch, args.repeat)
    if args.device:
        summary["device"] = device_figures(args, model_dir, pixels, fp32, rounds)
    print_table(summary)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
