"""Text->image and image->text recall@1/5/10 on a captioned image set, through the product's own index and search.

    python scripts/eval_retrieval.py --images DIR --captions FILE [--model NAME] [--pretrained TAG]
        [--library DIR] [--split test] [--batch-size 32] [--limit-images N]

FILE is Karpathy's dataset_flickr30k.json / dataset_coco.json (images of --split, default "test"; an image's
file is DIR/filepath/filename when the entry has a filepath, else DIR/filename), or COCO's captions_*.json
(every image listed; DIR/file_name). The images are indexed with `Library.index` (the `searchengine index`
pipeline) into a scratch library (or --library), every caption is a text search (`Library.embed`, then
`Library.search_vector`: the path `search` takes), and every image is a query for image->text: its stored
embedding (what `search --image` uses for an indexed file) ranked against all caption embeddings. A caption's
text->image hit is its own image; an image's image->text hit is any of its captions. Figures are percentages,
as in CLIP papers; the last line printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KS = (1, 5, 10)


@dataclass
class Dataset:
    """Image files and, per caption, its text and the index of its image."""

    images: list[Path]
    captions: list[str]
    caption_image: list[int]


def load_captions(path: Path, images_dir: Path, split: str = "test") -> Dataset:
    """Read a Karpathy-style dataset_*.json (one split) or a COCO captions_*.json."""
    raw = json.loads(Path(path).read_text())
    entries = raw.get("images") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: no 'images' list: neither a Karpathy dataset_*.json nor a COCO captions file")
    if "annotations" in raw:
        return _coco(raw, images_dir)
    return _karpathy(entries, images_dir, split)


def _karpathy(entries: list[dict], images_dir: Path, split: str) -> Dataset:
    data = Dataset([], [], [])
    for entry in entries:
        if entry.get("split") != split:
            continue
        folder = images_dir / entry["filepath"] if entry.get("filepath") else images_dir
        data.images.append(folder / entry["filename"])
        for sentence in entry["sentences"]:
            data.captions.append(sentence["raw"].strip())
            data.caption_image.append(len(data.images) - 1)
    return data


def _coco(raw: dict, images_dir: Path) -> Dataset:
    position = {}
    data = Dataset([], [], [])
    for entry in raw["images"]:
        position[entry["id"]] = len(data.images)
        data.images.append(images_dir / entry["file_name"])
    for note in raw["annotations"]:
        data.captions.append(note["caption"].strip())
        data.caption_image.append(position[note["image_id"]])
    return data


def recall_at(rankings: list[list[int]], relevant: list[set[int]], ks: tuple[int, ...] = KS) -> dict[int, float]:
    """Percentage of queries with a relevant item in their first k ranked items, for each k."""
    if not rankings:
        return {k: 0.0 for k in ks}
    return {k: 100.0 * sum(bool(set(r[:k]) & rel) for r, rel in zip(rankings, relevant)) / len(rankings) for k in ks}


def top_k(queries: np.ndarray, items: np.ndarray, k: int, chunk: int = 1024) -> list[list[int]]:
    """Indices of each query's k best items by inner product, best first (ties: lower index first)."""
    k = min(k, len(items))
    out: list[list[int]] = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ items.T
        out.extend(np.argsort(-scores, axis=1, kind="stable")[:, :k].tolist())
    return out


def scratch_folder(images: list[Path], folder: Path) -> list[Path]:
    """Links named by position to each image (names may repeat across COCO folders); the paths indexed."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for i, image in enumerate(images):
        if not image.is_file():
            raise FileNotFoundError(f"image not found: {image}")
        link = folder / f"{i:07d}{image.suffix.lower()}"
        if not link.is_symlink():
            os.symlink(image.resolve(), link)
        links.append(link)
    return links


def evaluate(data: Dataset, library_dir: Path, model: str | None, pretrained: str | None,
             batch_size: int = 32) -> dict:
    """Index, search every caption, rank captions for every image; the figures as a dict."""
    from indexer.pipeline.local import IndexOptions
    from searchengine import Library, Term

    links = scratch_folder(data.images, library_dir / "images")
    library = Library.open(library_dir / "library")
    started = time.perf_counter()
    summary = library.index([str(library_dir / "images")], model, pretrained, IndexOptions(batch_size=batch_size))
    index_s = time.perf_counter() - started
    position = {os.fsdecode(os.path.abspath(p)): i for i, p in enumerate(links)}
    started = time.perf_counter()
    captions = np.concatenate([library.embed(texts=data.captions[i:i + 256])
                               for i in range(0, len(data.captions), 256)]) if data.captions else np.zeros((0, 1))
    t2i = [[position[h.path] for h in library.search_vector(row, limit=max(KS))] for row in captions]
    search_s = time.perf_counter() - started
    # An indexed file's stored embedding, as `search --image` takes it (a one-term query is that unit vector).
    images = np.stack([library.query_vector([Term("image", str(p))]) for p in links])
    i2t = top_k(images, captions, max(KS))
    per_image: list[set[int]] = [set() for _ in links]
    for caption, image in enumerate(data.caption_image):
        per_image[image].add(caption)
    text_recall = recall_at(t2i, [{image} for image in data.caption_image])
    image_recall = recall_at(i2t, per_image)
    figures = {f"t2i_r{k}": round(v, 2) for k, v in text_recall.items()}
    figures |= {f"i2t_r{k}": round(v, 2) for k, v in image_recall.items()}
    return figures | {"images": len(links), "captions": len(data.captions), "indexed": summary.added,
                      "failed": summary.failed, "index_s": round(index_s, 1), "text_search_s": round(search_s, 1),
                      "model": library.status().model, "pretrained": library.status().pretrained}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of the data set's images")
    parser.add_argument("--captions", type=Path, required=True, help="dataset_*.json (Karpathy) or captions_*.json (COCO)")
    parser.add_argument("--model", default=None, help="open_clip model (default ViT-B-32)")
    parser.add_argument("--pretrained", default=None, help="pretrained tag or checkpoint (default laion2b_s34b_b79k)")
    parser.add_argument("--library", type=Path, default=None, help="work folder to keep (default: a scratch folder)")
    parser.add_argument("--split", default="test", help="Karpathy split to evaluate (default test)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-images", type=int, default=0, help="evaluate only the first N images (a quick look)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        data = load_captions(args.captions, args.images, args.split)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.exit(f"error: cannot read {args.captions}: {exc}")
    if args.limit_images:
        keep = args.limit_images
        kept = [(c, i) for c, i in zip(data.captions, data.caption_image) if i < keep]
        data = Dataset(data.images[:keep], [c for c, _ in kept], [i for _, i in kept])
    if not data.images:
        sys.exit(f"error: no images in split {args.split!r} of {args.captions}")
    with tempfile.TemporaryDirectory(prefix="eval-retrieval-") as scratch:
        try:
            figures = evaluate(data, args.library or Path(scratch), args.model, args.pretrained, args.batch_size)
        except (FileNotFoundError, ValueError) as exc:
            sys.exit(f"error: {exc}")
    print(f"{figures['images']} images, {figures['captions']} captions ({figures['model']} {figures['pretrained']})")
    for kind in ("t2i", "i2t"):
        print(f"{kind}: " + "  ".join(f"R@{k} {figures[f'{kind}_r{k}']:.2f}" for k in KS))
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    from indexer.errors import SearchEngineError

    try:
        main()
    except SearchEngineError as exc:
        sys.exit(f"error: {exc}")
