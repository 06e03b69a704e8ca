"""HEIC/HEIF (pi-heif) and AVIF (Pillow) files: indexed, searched and embedded like any other format.

Files are generated here: HEIC with pillow-heif's encoder (a test-only dependency), AVIF with Pillow's.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.cli import run
from helpers.images import ORIENTATION, avif, heic, photo, rotated_exif
from indexer.images.decode import load_rgb
from indexer.pipeline.scan import is_image_name

pillow_heif = pytest.importorskip("pillow_heif")


def heic_16bit(img: Image.Image) -> bytes:
    rgb16 = np.asarray(img, dtype=np.uint16) * 257
    buf = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=img.size, data=rgb16.tobytes()).save(buf, quality=92, chroma=444)
    return buf.getvalue()


def with_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(img.width * img.height).reshape(img.height, img.width) % 256)
                                  .astype(np.uint8)))
    return rgba


def make_files(folder: Path) -> dict[str, tuple[bytes, Image.Image]]:
    """name -> (file bytes, the upright picture it should decode to)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = [photo(300 + n) for n in range(8)]
    files = {
        "plain.heic": (heic(p[0]), p[0]),
        "UPPER.HEIC": (heic(p[1]), p[1]),
        "other.heif": (heic(p[2]), p[2]),
        "rotated.heic": (heic(p[3], exif=rotated_exif()), p[3].transpose(Image.Transpose.ROTATE_270)),
        "deep.heic": (heic_16bit(p[4]), p[4]),
        "alpha.heic": (heic(with_alpha(p[5])), p[5]),
        "plain.avif": (avif(p[6]), p[6]),
        "rotated.AVIF": (avif(p[7], exif=rotated_exif()), p[7].transpose(Image.Transpose.ROTATE_270)),
        "alpha.avif": (avif(with_alpha(p[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
                       p[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return files


def test_extensions_in_any_case_are_images():
    for name in (b"a.heic", b"b.HEIC", b"c.heif", b"d.HeIf", b"e.avif", b"f.AVIF"):
        assert is_image_name(name)


def test_decoded_upright_and_faithful(isolated):
    for name, (data, expected) in make_files(isolated / "photos").items():
        decoded = load_rgb(data)
        assert decoded.mode == "RGB" and decoded.size == expected.size, name
        difference = np.abs(np.asarray(decoded, np.int16) - np.asarray(expected.convert("RGB"), np.int16)).mean()
        assert difference < 6, (name, difference)  # lossy at quality 92; a wrong turn or channel is ~60


def test_index_search_and_embed(isolated, tiny_model_name):
    folder = isolated / "photos"
    files = make_files(folder)
    whole = files["plain.heic"][0]
    (folder / "truncated.heic").write_bytes(whole[:len(whole) // 2])
    whole = files["plain.avif"][0]
    (folder / "truncated.avif").write_bytes(whole[:len(whole) // 2])
    result = run("index", folder, "--model", tiny_model_name, "--json")
    summary = json.loads(result.stdout)
    assert summary["added"] == len(files) and summary["failed"] == 2
    assert "truncated.heic:" in result.stderr and "truncated.avif:" in result.stderr
    assert "Traceback" not in result.stderr
    for name in ("rotated.heic", "deep.heic", "rotated.AVIF"):
        hits = json.loads(run("search", "--image", folder / name, "--json", "--limit", "3").stdout)
        assert hits[0]["path"] == str(folder / name) and hits[0]["score"] > 0.999
    upright = isolated / "upright.png"
    files["rotated.heic"][1].save(upright)
    embedded = json.loads(run("embed", "--image", folder / "rotated.heic", "--image", upright, "--json").stdout)
    a, b = (np.array(e["embedding"]) for e in embedded)
    sideways = isolated / "sideways.png"
    photo(303).save(sideways)
    c = np.array(json.loads(run("embed", "--image", sideways, "--json").stdout)[0]["embedding"])
    assert float(a @ b) > float(a @ c)  # closer to the upright picture than to the stored-sideways one
    result = run("search", "--image", folder / "truncated.heic", ok=False)
    assert result.exit_code != 0 and "truncated.heic" in result.stderr and "Traceback" not in result.stderr


def test_exif_metadata_is_readable(isolated):
    exif = Image.Exif()
    exif[0x010F] = "TestMake"  # Make
    exif[ORIENTATION] = 6
    for data in (heic(photo(5), exif=exif.tobytes()), avif(photo(5), exif=exif.tobytes())):
        with Image.open(io.BytesIO(data)) as img:
            assert img.getexif().get(0x010F) == "TestMake"
        assert load_rgb(data).size == (64, 96)  # turned upright once, never twice
