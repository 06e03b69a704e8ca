"""Embeddings equal open_clip's own reference path (same decode, preprocessing and model), across formats."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from helpers.cli import run
from helpers.images import GOOD, make_library_folder, photo


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    import open_clip

    name = f"local-dir:{tiny_model_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def reference_image(reference, path) -> np.ndarray:
    model, preprocess, _ = reference
    with torch.inference_mode():
        pixels = preprocess(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        return unit(model.encode_image(pixels[None]).numpy()[0])


def embed(*args) -> list[dict]:
    result = run("embed", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# Judged against the spread between different images: a random model's embeddings can all sit close together,
# where a bare cosine bar would pass anything. Same bound as scripts/bench_index.py's fidelity figure.
MAX_SHARE_OF_SPREAD = 0.01
LARGE_JPEGS = [((2000, 1500), None), ((2000, 1500), 6), ((4000, 3000), 8), ((4000, 3000), 3), ((4000, 3000), None)]


def large_jpeg(path: Path, seed: int, size: tuple[int, int], orientation: int | None) -> Path:
    """A camera-sized JPEG with fine detail (so the reduced-size decode has something to lose) and EXIF rotation."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.asarray(photo(seed, (w // 8, h // 8)).resize(size, Image.BILINEAR), dtype=np.int16)
    yy, xx = np.mgrid[0:h, 0:w]
    base = base + (30 * np.sin(xx / rng.uniform(2.5, 6)) * np.cos(yy / rng.uniform(2.5, 6)))[..., None].astype(np.int16)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    base[y0:y0 + h // 4, x0:x0 + w // 6] = rng.integers(0, 256, 3)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def assert_faithful(ours: np.ndarray, expected: np.ndarray, names: list[str]) -> None:
    """Worst (1 - cos) to open_clip's path <= 1% of the mean (1 - cos) between distinct reference images."""
    distance = 1.0 - np.sum(unit(ours) * unit(expected), axis=1)
    pairs = 1.0 - expected @ expected.T
    between = float(pairs[~np.eye(len(expected), dtype=bool)].mean())
    assert between > 1e-4, between  # the images must differ for the bound to mean anything
    worst = int(np.argmax(distance))
    assert distance[worst] <= MAX_SHARE_OF_SPREAD * between, (names[worst], float(distance[worst]), between)


def test_image_embeddings_match_open_clip_for_every_format(isolated, tiny_model_name, reference):
    photos = make_library_folder(isolated / "photos", bad=False)
    run("index", isolated / "photos", "--model", tiny_model_name)
    args = [a for name in GOOD for a in ("--image", photos[name])]
    ours = np.array([item["embedding"] for item in embed(*args)])
    expected = np.stack([reference_image(reference, photos[name]) for name in GOOD])
    assert_faithful(ours, expected, list(GOOD))


def test_large_rotated_jpegs_take_the_reduced_decode_and_match_open_clip(isolated, tiny_model_name, reference):
    from indexer.images.decode import draft_scale
    from indexer.model.clip import ModelSpec, load_model

    folder = isolated / "large"
    folder.mkdir()
    paths = [large_jpeg(folder / f"p{i}.jpg", i, size, orientation) for i, (size, orientation) in enumerate(LARGE_JPEGS)]
    cfg = load_model(ModelSpec.resolve(tiny_model_name, None)).preprocess_cfg
    for size, _ in LARGE_JPEGS:
        assert draft_scale(size, cfg) >= 4  # what this test is about: the reduced-size JPEG decode
    run("index", folder, "--model", tiny_model_name)
    ours = np.array([item["embedding"] for item in embed(*[a for p in paths for a in ("--image", p)])])
    expected = np.stack([reference_image(reference, p) for p in paths])
    assert_faithful(ours, expected, [p.name for p in paths])
    # Rotated files must not match an unrotated reading: orientation is applied, not ignored.
    with torch.inference_mode():
        model, preprocess, _ = reference
        raw = unit(model.encode_image(preprocess(Image.open(paths[1]).convert("RGB"))[None]).numpy()[0])
    assert 1.0 - float(np.dot(unit(ours[1]), raw)) > 10 * (1.0 - float(np.dot(unit(ours[1]), expected[1])))


def test_text_embeddings_match_open_clip(isolated, tiny_model_name, reference):
    make_library_folder(isolated / "photos", bad=False)
    run("index", isolated / "photos", "--model", tiny_model_name)
    model, _, tokenizer = reference
    for text in ["a dog running on a beach", "Ünïcödé — 東京の夜景 🌃", "", "x " * 100]:
        ours = np.array(embed(text)[0]["embedding"])
        with torch.inference_mode():
            expected = unit(model.encode_text(tokenizer([text])).numpy()[0])
        assert float(np.dot(unit(ours), expected)) >= 0.999, text


def test_embed_without_library_uses_given_model(isolated, tiny_model_name, reference):
    make_library_folder(isolated / "photos", bad=False)
    ours = embed("--image", isolated / "photos" / "a.jpg", "--model", tiny_model_name)
    expected = reference_image(reference, isolated / "photos" / "a.jpg")
    assert float(np.dot(unit(np.array(ours[0]["embedding"])), expected)) >= 0.999
    assert not (isolated / "library" / "catalog.sqlite").exists()
