"""`searchengine index --ray auto` against the local pipeline on the same photos (goal: >= 0.7x the local rate).

Both are measured as bench_index.py measures the local pipeline: runs over N and 4N photos on fresh libraries,
the steady rate being 3N / (t(4N) - t(N)), which cancels start-up (Ray's start, the actor's model load). The
end-to-end rate of the 4N run is reported too. Photos: bench_index.py's 4000x3000 JPEGs; model: a random-weight
ViT-B-32 (speed does not depend on the weights). The last line printed is one JSON object.

    .venv/bin/python scripts/bench_ray.py [--n 24] [--repeat 1]
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import benchlib
from benchlib import index_steady_ips, photo_set, run_index


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="photos in the small run (the large one is 4N)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=benchlib.WORK, help="photos, model and scratch libraries")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    photos = benchlib.write_photos(args.cache / "photos", 4 * args.n)
    model_dir = benchlib.random_model(args.cache)
    work = args.cache / "work-ray"
    run_index(photo_set(photos, min(8, args.n), work), model_dir, work / "warm", [])  # file cache, bytecode
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    end_to_end: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(args.repeat):
        for name, extra in (("local", []), ("ray", ["--ray", "auto"])):
            steady, _, large = index_steady_ips(photos, args.n, model_dir, work, extra)
            rates[name].append(steady)
            end_to_end[name].append(4 * args.n / large.seconds)
            print(f"{name}: steady {steady:.2f} images/s, end to end (4N run) {4 * args.n / large.seconds:.2f} "
                  f"images/s, peak RSS {large.peak_mb:.0f} MB, other processes' CPU share {large.foreign:.2f}",
                  flush=True)
    local, ray = statistics.median(rates["local"]), statistics.median(rates["ray"])
    summary = dict(n=args.n, repeat=args.repeat, local_steady_ips=round(local, 2), ray_steady_ips=round(ray, 2),
                   ratio_steady=round(ray / local, 3),
                   local_end_to_end_ips=round(statistics.median(end_to_end["local"]), 2),
                   ray_end_to_end_ips=round(statistics.median(end_to_end["ray"]), 2),
                   ratio_end_to_end=round(statistics.median(end_to_end["ray"]) /
                                          statistics.median(end_to_end["local"]), 3))
    return benchlib.emit(summary)


if __name__ == "__main__":
    main()
