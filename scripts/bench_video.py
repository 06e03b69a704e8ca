"""Video indexing speed: seconds of work per minute of a 1080p H.264 video, against the naive loop.

Usage:  .venv/bin/python scripts/bench_video.py [--videos 3] [--seconds 40] [--gop 30] [--interval 2] [--repeat 2]

Generates (once, under .bench/video/) `--videos` 1080p30 H.264 MP4s at a phone's bitrate, of distinct textured
scenes (a pan, sensor-like noise) with a cut every few seconds and a keyframe every `--gop` frames (phones write
about one a second), and a random-weight ViT-B-32 (speed does not depend on the weights). Measures in one run,
each the best of `--repeat`, for the folder as a whole:
(a) `searchengine index` of the folder (fresh library each time; `embed_seconds`, the run's embedding phase,
    which holds the decode in the workers, the encode, the segmenting and the commits);
(b) its two parts in this process: the decode (probe + keyframe-seek sampling at the default interval, frames
    scaled by FFmpeg, cropped for the model) and the encode of those samples (the product's image encoder);
(c) the naive loop: decode every frame with PyAV, convert one every `--interval` seconds to RGB, preprocess it
    with open_clip's reference transform and encode those in batches.
Goals (issue "Find the moment"): (c) / (a) >= 5, and decode <= encode at the default interval on this machine.
Prints a table; the last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib
import numpy as np
from benchlib import CORES, SEARCHENGINE, WORK, cli_env, emit

FPS = 30
SIZE = (1920, 1080)
SCENE_S = 7.0  # a cut every 7 s
BITRATE = 16_000_000  # what phones record 1080p30 at (16-20 Mbit/s)


def make_video(path: Path, seconds: float, gop: int, seed: int) -> Path:
    """1080p30 H.264 at a phone's bitrate (BITRATE; yuv420p, veryfast) of moving, distinct, textured scenes with
    sensor-like noise (a smooth picture would compress to a tenth of a phone's bitrate and decode unrealistically
    fast): made once, reused by later runs."""
    if path.exists():
        return path
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_suffix(".part.mp4")
    w, h = SIZE
    noise = np.random.default_rng(99).integers(-14, 15, (4, h, w, 1), dtype=np.int16)
    with av.open(str(aside), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.bit_rate = BITRATE
        stream.options = {"preset": "veryfast", "keyint_min": str(gop), "sc_threshold": "0"}
        picture = None
        for n in range(int(seconds * FPS)):
            t = n / FPS
            if n % int(SCENE_S * FPS) == 0:
                picture = _scene(seed * 100 + int(t // SCENE_S))
            moved = np.roll(picture, 4 * n, axis=1) + noise[n % len(noise)]  # a pan, with fresh noise
            img = np.clip(moved, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(aside, path)
    return path


def _scene(seed: int) -> np.ndarray:
    """A full-size textured picture: a colour, a wave and 8x8-pixel blocks of detail (int16, H x W x 3)."""
    w, h = SIZE
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h // 8, 0:w // 8]
    base, freq = rng.uniform(30, 225, 3), rng.uniform(0.05, 0.3, 2)
    small = base + 40 * np.sin(freq[0] * x + freq[1] * y)[..., None] + rng.uniform(-50, 50, (h // 8, w // 8, 3))
    return np.kron(small, np.ones((8, 8, 1))).astype(np.int16)


def product_index(folder: Path, model_dir: Path, library: Path, interval: float) -> dict:
    shutil.rmtree(library, ignore_errors=True)
    command = [*SEARCHENGINE, "index", str(folder), "--library", str(library), "--model", f"local-dir:{model_dir}",
               "--video-interval", str(interval), "--json"]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=cli_env())
    return json.loads(done.stdout.strip().splitlines()[-1])


def product_parts(video: Path, model, interval: float) -> dict:
    """The decode (as an index worker does it) and the encode of its samples, timed apart in this process."""
    from indexer.images.decode import crop_for_model, normalise_crops
    from indexer.video.frames import sample_frames, sample_times
    from indexer.video.probe import open_video, probe
    from indexer.video.segments import pixel_signature

    started = time.perf_counter()
    crops = []
    with open_video(os.fsencode(video)) as container:
        info = probe(container)
        for frame in sample_frames(container, info, sample_times(info.duration_s, interval, 500)):
            crops.append(crop_for_model(frame.image, model.preprocess_cfg))
            pixel_signature(frame.image)
    decode = time.perf_counter() - started
    pixels = normalise_crops(np.stack(crops), model.preprocess_cfg)
    started = time.perf_counter()
    for start in range(0, len(pixels), 32):
        model.encode_pixels(pixels[start:start + 32])
    return {"decode_s": decode, "encode_s": time.perf_counter() - started, "samples": len(crops),
            "duration_s": info.duration_s}


def naive_loop(video: Path, model, reference, interval: float) -> dict:
    """Every frame decoded; one every `interval` seconds converted, preprocessed (open_clip's transform), encoded."""
    import av
    import torch

    started = time.perf_counter()
    batch, frames, encoded = [], 0, 0
    next_at = 0.0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames += 1
            if frame.time is not None and frame.time >= next_at:
                next_at += interval
                batch.append(reference(frame.to_image()))
                if len(batch) == 32:
                    model.encode_pixels(torch.stack(batch).numpy())
                    encoded += len(batch)
                    batch = []
    if batch:
        model.encode_pixels(torch.stack(batch).numpy())
        encoded += len(batch)
    return {"seconds": time.perf_counter() - started, "frames_decoded": frames, "encoded": encoded}


def _summed(figures: list[dict]) -> dict:
    """Per-video figures added up (the folder as one piece of work)."""
    return {key: sum(f[key] for f in figures) for key in figures[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3, help="distinct videos in the folder (default 3)")
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each (default 40)")
    parser.add_argument("--gop", type=int, default=30)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    import open_clip

    from indexer.model.clip import ModelSpec, load_model

    work = WORK / "video"
    folder = work / f"folder-{args.videos}x{int(args.seconds)}s-gop{args.gop}-{BITRATE // 10**6}M"
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for n in range(args.videos):
        video = make_video(work / "in" / f"clip{n}-{int(args.seconds)}s-gop{args.gop}-{BITRATE // 10**6}M.mp4",
                           args.seconds, args.gop, seed=n)
        if not (folder / video.name).exists():
            os.link(video, folder / video.name)
        videos.append(video)
    model_dir = benchlib.random_model()
    model = load_model(ModelSpec(f"local-dir:{model_dir}", None), "fp32", "cpu")
    _, _, reference = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    runs, parts, naive = [], [], []
    for _ in range(args.repeat):  # interleaved, so a drift of the machine's speed touches each alike
        runs.append(product_index(folder, model_dir, work / "library", args.interval))
        parts.append(_summed([product_parts(v, model, args.interval) for v in videos]))
        naive.append(_summed([naive_loop(v, model, reference, args.interval) for v in videos]))
    minutes = parts[0]["duration_s"] / 60
    best_run = min(r["embed_seconds"] for r in runs)
    best_naive = min(n["seconds"] for n in naive)
    decode, encode = min(p["decode_s"] for p in parts), min(p["encode_s"] for p in parts)
    emit({
        "videos": f"{args.videos} x {SIZE[0]}x{SIZE[1]} H.264 {FPS} fps, {parts[0]['duration_s']:.1f} s in all, "
                  f"keyframe every {args.gop} frames",
        "bitrate_mbit_s": round(sum(v.stat().st_size for v in videos) * 8 / parts[0]["duration_s"] / 1e6, 1),
        "interval_s": args.interval, "cores": CORES, "load_before": round(os.getloadavg()[0], 2),
        "segments": runs[0]["segments"], "samples": parts[0]["samples"],
        "index_s_per_video_minute": round(best_run / minutes, 3),
        "index_embed_seconds": [round(r["embed_seconds"], 3) for r in runs],
        "decode_s_per_video_minute": round(decode / minutes, 3),
        "encode_s_per_video_minute": round(encode / minutes, 3),
        "decode_over_encode": round(decode / encode, 3),
        "naive_s_per_video_minute": round(best_naive / minutes, 3),
        "naive_seconds": [round(n["seconds"], 3) for n in naive],
        "naive_frames_decoded": naive[0]["frames_decoded"],
        "speedup_over_naive": round(best_naive / best_run, 2),
        "goal_speedup": 5.0, "goal_decode_over_encode": 1.0,
    }, width=28)


if __name__ == "__main__":
    sys.exit(main())
