"""Before an int8 library exists: compare the int8 image tower with fp32 on the user's first photos.

Runs before the catalog is created, so a refusal (or a kill during the check) leaves nothing behind. The
photos are the first `count` decodable files of the roots in scan order, the same ones the index run's first
batch will hold. The rule is indexer/model/precision.py's, shared with the GPU's fp16 check.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

from indexer.errors import PrecisionRefusedError
from indexer.images.decode import ImageDecodeError, PreprocessConfig, decode_and_preprocess
from indexer.images.files import read_file
from indexer.model.precision import MIN_PHOTOS, Verdict, judge
from indexer.pipeline.scan import Excluder, scan_root

if TYPE_CHECKING:
    from indexer.model.clip import ClipModel

TRIES_PER_PHOTO = 8  # files tried per photo wanted: bounds the time spent on folders full of unusable files


def check_int8(model: "ClipModel", roots: Sequence[bytes], exclude: Sequence[str], count: int) -> Verdict:
    """Switch `model` (loaded fp32, on the CPU) to int8 if it passes on the first photos, else raise."""
    from indexer.model.clip import int8_tower

    pixels = first_photos(roots, exclude, model.preprocess_cfg, count)
    tower = int8_tower(model.model.visual)  # a quantised copy; the fp32 tower is left as it is
    verdict = judge(model.images.run(pixels, None), _encode_with(model, tower, pixels)) if len(pixels) else None
    if verdict is None:
        raise PrecisionRefusedError(
            f"--int8 is checked against fp32 on at least {MIN_PHOTOS} different photos when a library is created; "
            f"found {len(pixels)} usable: index without --int8, or start the library with more photos")
    if not verdict.ok:
        raise PrecisionRefusedError(f"--int8 refused, library not created: on your first {len(pixels)} photos, "
                                    f"{verdict.describe()}; index without --int8")
    model.use_int8_tower(tower)
    return verdict


def _encode_with(model: "ClipModel", tower: object, pixels: np.ndarray) -> np.ndarray:
    """The model's own encode_image path, with `tower` as its image tower for this call."""
    from indexer.model.image_encoder import ImageEncoder

    original, model.model.visual = model.model.visual, tower
    try:
        return ImageEncoder(model.model.encode_image).run(pixels, None)
    finally:
        model.model.visual = original


def first_photos(roots: Sequence[bytes], exclude: Sequence[str], cfg: PreprocessConfig, count: int) -> np.ndarray:
    """Preprocessed pixels of the first `count` decodable, distinct (by content) image files under `roots`."""
    excluded, visited = Excluder(exclude), set()
    seen: set[bytes] = set()
    rows: list[np.ndarray] = []
    tries = 0
    for root in roots:
        for scan in scan_root(root, excluded, visited):
            for entry in scan.files:
                if len(rows) >= count or tries >= TRIES_PER_PHOTO * count:
                    return _stack(rows)
                tries += 1
                pixels = _pixels(entry.path, cfg, seen)
                if pixels is not None:
                    rows.append(pixels)
    return _stack(rows)


def _pixels(path: bytes, cfg: PreprocessConfig, seen: set[bytes]) -> np.ndarray | None:
    try:
        data, _, _ = read_file(path)
    except (OSError, ValueError):
        return None
    digest = hashlib.blake2b(data, digest_size=16).digest()
    if not data or digest in seen:
        return None
    seen.add(digest)
    try:
        return decode_and_preprocess(data, cfg)
    except ImageDecodeError:
        return None


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0,), dtype=np.float32)
