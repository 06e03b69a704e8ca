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
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
from benchlib import CORES, index_steady_ips, per_item_seconds, rate, run_index, spread, watched

from indexer.images.decode import decode_and_preprocess, load_rgb, preprocess
from indexer.model.clip import ClipModel, ModelSpec, int8_tower, load_model
from indexer.model.image_encoder import ImageEncoder
from indexer.model.precision import judge

Encode = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- the model, encoding, fidelity

@dataclass
class Model:
    """The product's model (ClipModel: open_clip module, our preprocess config, CPU image encoder) and
    open_clip's reference eval transform, which the naive loop uses."""

    clip: ClipModel
    reference: Callable[[Any], Any]

    @property
    def encode(self) -> Encode:
        return self.clip.encode_pixels


def open_model(folder: Path) -> Model:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    clip = load_model(ModelSpec.resolve(f"local-dir:{folder}", None))
    return Model(clip, image_transform_v2(PreprocessCfg(**clip.model.visual.preprocess_cfg), is_train=False))


def int8_encoder(model: Model) -> Encode:
    """The product's `--int8` image tower (int8_tower quantises a copy), encoding as the index run does."""
    return ImageEncoder(int8_tower(model.clip.model.visual)).encode


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def pure_forward_ips(encode: Encode, pixels: np.ndarray, batch: int, threads: int) -> float:
    """Images/s of the image encoder alone on preprocessed arrays (no I/O), after a warm-up batch."""
    set_threads(threads)
    x = np.concatenate([pixels] * int(np.ceil(batch / len(pixels))))[:batch]
    return rate(lambda: encode(x), batch)


def encode_all(encode: Encode, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([encode(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])


def naive_loop(paths: list[Path], model: Model, batch: int) -> tuple[float, np.ndarray]:
    """open_clip's reference path in a plain loop; images/s and its embeddings (the fidelity reference)."""
    import torch
    from PIL import Image, ImageOps

    set_threads(CORES)
    rows, started = [], time.perf_counter()
    for start in range(0, len(paths), batch):
        tensors = []
        for path in paths[start:start + batch]:
            with Image.open(path) as img:
                tensors.append(model.reference(ImageOps.exif_transpose(img).convert("RGB")))
        rows.append(model.encode(torch.stack(tensors).numpy()))
    return len(paths) / (time.perf_counter() - started), np.concatenate(rows)


@dataclass
class Fidelity:
    worst: float
    mean: float
    between: float

    @property
    def ratio(self) -> float:
        return self.worst / self.between


def fidelity(ours: np.ndarray, reference: np.ndarray) -> Fidelity:
    """Worst and mean (1 - cos) to the reference, and the mean (1 - cos) between different photos (the
    product's precision check, indexer.model.precision.judge, gives the worst and the spread)."""
    verdict = judge(reference, ours, min_photos=1)
    return Fidelity(verdict.worst, float(np.mean(1.0 - (ours * reference).sum(axis=1))), verdict.between)


def photo_set_fidelity(photos: list[Path], model: Model, head_reference: np.ndarray, batch: int) -> Fidelity:
    """Fidelity of decode_and_preprocess over every photo; the reference embeddings of the first ones come from
    the naive loop already run."""
    _, tail = naive_loop(photos[len(head_reference):], model, batch)
    ours = [model.encode(np.stack([decode_and_preprocess(p.read_bytes(), model.clip.preprocess_cfg)
                                   for p in photos[i:i + batch]])) for i in range(0, len(photos), batch)]
    return fidelity(np.concatenate(ours), np.concatenate([head_reference, tail]))


# ---------------------------------------------------------------- --explore: figures for the pipeline's design

_preparer: Callable | None = None  # in a decode worker: what prepares one file


def _init_worker(catalog_path: str, cfg: Any, idle: bool) -> None:
    """The product's worker set-up (init_worker, at idle priority), or its Preparer without that priority."""
    global _preparer
    from indexer.pipeline import prepare

    if idle:
        prepare.init_worker(catalog_path, cfg)
        _preparer = prepare.prepare_in_worker
    else:
        _preparer = prepare.Preparer(catalog_path, cfg)


def _prepare(path: Path) -> np.ndarray:
    """What a pipeline worker does per file: the product's read, hash, reuse lookup, decode and preprocess."""
    from indexer.pipeline.plan import Task

    prepared = _preparer(Task(os.fsencode(path), None))
    assert prepared.pixels is not None, prepared.error
    return prepared.pixels


def overlap_ips(paths: list[Path], model: Model, threads: int, workers: int, kind: str, batch: int,
                work: Path) -> float:
    """A minimal pipeline: decode in a pool while this process encodes batches.

    kind: "process" (worker processes), "idle" (worker processes at idle priority) or "thread" (threads here).
    The workers' reuse lookups go to an empty catalog: every file is decoded.
    """
    set_threads(threads)
    catalog = work / "explore-catalog.sqlite"
    if not catalog.exists():
        benchlib.synthetic_catalog(catalog).close()
    setup = (str(catalog), model.clip.preprocess_cfg, kind == "idle")
    if kind == "thread":
        _init_worker(*setup)
        pool: Executor = ThreadPoolExecutor(workers)
    else:
        pool = ProcessPoolExecutor(workers, mp_context=get_context("forkserver"), initializer=_init_worker,
                                   initargs=setup)
    inflight: deque = deque()
    pending: list[np.ndarray] = []

    def take() -> None:
        pending.append(inflight.popleft().result())
        if len(pending) >= batch or not inflight:
            model.encode(np.stack(pending))
            pending.clear()

    with pool:
        list(pool.map(_prepare, paths[:workers]))  # start-up is not steady state
        started = time.perf_counter()
        for path in paths:
            inflight.append(pool.submit(_prepare, path))
            if len(inflight) >= 2 * batch:
                take()
        while inflight:
            take()
        return len(paths) / (time.perf_counter() - started)


def explore(photos: list[Path], model: Model, pixels: np.ndarray, fp32: np.ndarray, batch: int, repeat: int,
            work: Path) -> dict:
    """Forward rate by batch and threads, worker overlap, int8; configs interleaved `repeat` times."""
    threads_options = sorted({1, CORES})
    measures: dict[str, Callable[[], float]] = {}
    for threads in threads_options:
        for size in (16, 32, 64):
            measures[f"forward_b{size}_t{threads}"] = functools.partial(
                pure_forward_ips, model.encode, pixels, size, threads)
    configs = [(t, w, "process") for t in threads_options for w in threads_options]
    configs += [(CORES, w, "idle") for w in threads_options] + [(CORES, CORES, "thread")]
    for threads, workers, kind in configs:
        measures[f"overlap_t{threads}_w{workers}_{kind}"] = functools.partial(
            overlap_ips, photos, model, threads, workers, kind, batch, work)
    samples: dict[str, list[tuple[float, float]]] = {key: [] for key in measures}
    for _ in range(repeat):
        for key, measure in measures.items():
            samples[key].append(watched(measure))
    figures: dict[str, Any] = {}
    for key, pairs in samples.items():  # median, max, and the value measured when the machine was quietest
        quiet_value, quiet_foreign = min(pairs, key=lambda sample: sample[1])
        figures[key] = {"median": round(statistics.median(v for v, _ in pairs), 2),
                        "max": round(max(v for v, _ in pairs), 2), "quietest": round(quiet_value, 2),
                        "quietest_foreign": round(quiet_foreign, 3)}
    figures["int8"] = int8_figures(model, pixels, fp32, batch, repeat)  # also in the default summary
    return figures


def int8_figures(model: Model, pixels: np.ndarray, fp32: np.ndarray, batch: int, repeat: int) -> dict:
    """Dynamic int8 quantisation of the Linear layers: speed against fp32 (interleaved) and error to fp32."""
    quantised = int8_encoder(model)
    speedups = []
    for _ in range(repeat):
        ips_int8 = pure_forward_ips(quantised, pixels, batch, CORES)
        speedups.append(ips_int8 / pure_forward_ips(model.encode, pixels, batch, CORES))
    error = fidelity(encode_all(quantised, pixels, batch), fp32)
    return {"speedup_median": round(statistics.median(speedups), 3), "speedup_min": round(min(speedups), 3),
            "speedup_max": round(max(speedups), 3), "worst_1_minus_cos": error.worst,
            "mean_1_minus_cos": error.mean, "worst_over_between": error.ratio}


# ---------------------------------------------------------------- rounds, device, summary

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
    cfg = model.clip.preprocess_cfg
    pure, foreign_pure = watched(lambda: pure_forward_ips(model.encode, pixels, args.batch, CORES))
    decode, foreign_decode = watched(lambda: per_item_seconds(lambda d: decode_and_preprocess(d, cfg), datas))
    (naive, reference), foreign_naive = watched(lambda: naive_loop(photos[:args.n], model, args.batch))
    result = Round(pure, decode, naive, foreign=max(foreign_pure, foreign_decode, foreign_naive))
    if not args.skip_index:
        ips, first, second = index_steady_ips(photos, args.n, model_dir, args.cache / "work", args.index_args.split())
        result.index_ips, result.peak_rss_mb = ips, max(first.peak_mb, second.peak_mb)
        result.cli_steady_ips = 3 * args.n / (second.report["seconds"] - first.report["seconds"])
        result.wall_n_s, result.wall_4n_s = first.seconds, second.seconds
        result.foreign = max(result.foreign, first.foreign, second.foreign)
    return result, reference


def device_figures(args: argparse.Namespace, model_dir: Path, pixels: np.ndarray, fp32: np.ndarray,
                   rounds: list[Round]) -> dict:
    """The product's encoder on the device: forward-only images/s (host-device copies included, no decode) in the
    precision it settled on after its check, against the decode limit; and its fidelity to the CPU fp32 path."""
    from indexer.model.device import device_label

    clip = load_model(ModelSpec.resolve(f"local-dir:{model_dir}", None), device=args.device,
                      notice=lambda m: print(f"device: {m}", file=sys.stderr))
    embeddings = encode_all(clip.encode_pixels, pixels, args.batch)  # the precision check runs on the first batch
    x = np.concatenate([pixels] * int(np.ceil(args.batch / len(pixels))))[:args.batch]
    forward = rate(lambda: clip.encode_pixels(x), args.batch, min_steps=4)
    decode_limit = CORES / statistics.median(r.decode_s for r in rounds)
    verdict = judge(fp32, embeddings)
    figures = {"device": device_label(clip.device), "precision": clip.compute_precision,
               "forward_ips": round(forward, 2), "decode_limit_ips": round(decode_limit, 2),
               "limit_ips": round(min(forward, decode_limit), 2),
               "fidelity_worst_over_between": verdict.ratio if verdict else None,
               "fidelity_ok": verdict.ok if verdict else None, "goal_ratio": 0.85}
    if not args.skip_index:
        index_ips = statistics.median(r.index_ips for r in rounds)
        figures |= {"index_ips": round(index_ips, 2), "ratio_to_limit": round(index_ips / figures["limit_ips"], 4)}
    return figures


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


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48,
                        help="images in the small index run (the large one is 4N); below ~48 start-up noise swamps it")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the speed measurements")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--folder", type=Path, help="use these JPEGs instead of generated photos (needs 4N)")
    parser.add_argument("--cache", type=Path, default=benchlib.WORK, help="photos, model and scratch libraries")
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
    if args.folder:
        photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    else:
        photos = benchlib.write_photos(args.cache / "photos", 4 * args.n)
    if len(photos) < 4 * args.n:
        args.n = len(photos) // 4
        print(f"only {len(photos)} photos: N = {args.n}", file=sys.stderr)
    if args.n < 1:
        sys.exit("need at least 4 JPEGs")
    model_dir = benchlib.random_model(args.cache)
    model = open_model(model_dir)
    datas = [p.read_bytes() for p in photos[:args.n]]
    pixels = np.stack([decode_and_preprocess(d, model.clip.preprocess_cfg) for d in datas])
    if not args.skip_index:  # warm-up: file cache, bytecode, first-run costs
        warm = benchlib.photo_set(photos, min(8, args.n), args.cache / "work")
        run_index(warm, model_dir, args.cache / "work" / "warm", args.index_args.split())
    rounds, reference = [], None
    for _ in range(args.repeat):
        result, reference = one_round(args, photos, model, datas, pixels, model_dir)
        rounds.append(result)
    full = per_item_seconds(lambda d: preprocess(load_rgb(d), model.clip.preprocess_cfg), datas[:8])
    fid = photo_set_fidelity(photos[:4 * args.n], model, reference, args.batch)
    summary = summarise(rounds, fid, full, args)
    fp32 = encode_all(model.encode, pixels, args.batch)
    summary["int8"] = int8_figures(model, pixels, fp32, args.batch, args.repeat)  # for `index --int8`
    if args.explore:
        summary["explore"] = explore(photos[:args.n], model, pixels, fp32, args.batch, args.repeat,
                                     args.cache / "work")
    if args.device:
        summary["device"] = device_figures(args, model_dir, pixels, fp32, rounds)
    print_table(summary)
    return benchlib.emit(summary)


if __name__ == "__main__":
    main()
