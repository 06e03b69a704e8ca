"""Fidelity of the numpy text tower to open_clip's `encode_text` on a generated ViT-B-32 library.

For Q distinct photo-search texts: the cosine between the library's numpy export and open_clip's embedding, and
whether the exact top-20 of the library (`Library.search_vector(..., exact=True)`) comes out in the same order.
The library is query_latency.py's (benchlib.grown_library, built once under .bench/). The last line printed is JSON.

    .venv/bin/python scripts/bench_text_tower.py [--images 2000] [--queries 222]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import benchlib
import numpy as np


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="library size (query_latency.py's library)")
    parser.add_argument("--queries", type=int, default=222)
    parser.add_argument("--work", type=Path, default=benchlib.WORK)
    args = parser.parse_args(argv)
    from indexer.model.clip import ModelSpec, load_model
    from searchengine import Library

    library_dir, _ = benchlib.grown_library(args.work, args.images, "query")
    library = Library.open(library_dir)
    status = library.status()
    if status.text_encoder != "numpy":
        sys.exit(f"the library's text tower export is not in use: {status.text_encoder_note}")
    texts = benchlib.query_texts(args.queries, seed=11)
    ours = np.concatenate([library.embed(texts=texts[i:i + 32]) for i in range(0, len(texts), 32)])
    model = load_model(ModelSpec(status.model, status.pretrained))
    reference = np.concatenate([model.encode_texts(texts[i:i + 32]) for i in range(0, len(texts), 32)])
    cosines = np.sum(ours * reference, axis=1)
    same = sum([h.id for h in library.search_vector(a, 20, exact=True)] ==
               [h.id for h in library.search_vector(b, 20, exact=True)] for a, b in zip(ours, reference))
    summary = {"queries": len(texts), "library_images": status.images, "min_cosine": float(cosines.min()),
               "mean_cosine": float(cosines.mean()), "top20_same_order": int(same)}
    print(f"{len(texts)} texts: min cosine {cosines.min():.7f}, top-20 identical for {same} of {len(texts)}")
    return benchlib.emit(summary)


if __name__ == "__main__":
    main()
