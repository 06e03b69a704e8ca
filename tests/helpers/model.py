"""The tiny random-weight model comes from one place, indexer.model.random_weights (TINY); this rewrites it."""
from __future__ import annotations

from pathlib import Path

from indexer.model.random_weights import TINY, build_random_model

MODEL_FILES = ("open_clip_model.safetensors", "open_clip_config.json")


def rewrite_tiny_model(folder: Path, seed: int) -> Path:
    """Replace the tiny model in `folder` by the one of `seed` (same path, other weights, or the first ones back).

    build_random_model keeps a folder that already holds a model, so its files are removed first."""
    for name in MODEL_FILES:
        (folder / name).unlink(missing_ok=True)
    return build_random_model(folder, arch=TINY, seed=seed)
