"""Embeddings equal open_clip's own reference path (same decode, preprocessing and model), across formats."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps

from images import GOOD, make_library_folder
from searchengine.cli import main


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
    result = CliRunner().invoke(main, ["embed", *map(str, args), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_image_embeddings_match_open_clip_for_every_format(isolated, tiny_model_name, reference):
    photos = make_library_folder(isolated / "photos", bad=False)
    CliRunner().invoke(main, ["index", str(isolated / "photos"), "--model", tiny_model_name], catch_exceptions=False)
    args = [a for name in GOOD for a in ("--image", photos[name])]
    ours = embed(*args)
    for name, item in zip(GOOD, ours):
        cosine = float(np.dot(unit(np.array(item["embedding"])), reference_image(reference, photos[name])))
        assert cosine >= 0.999, (name, cosine)


def test_text_embeddings_match_open_clip(isolated, tiny_model_name, reference):
    make_library_folder(isolated / "photos", bad=False)
    CliRunner().invoke(main, ["index", str(isolated / "photos"), "--model", tiny_model_name], catch_exceptions=False)
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
