"""decode_and_preprocess against open_clip's reference path, for every format, mode, orientation and bad input."""
from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from helpers import REPO
from helpers.cli import python
from indexer.images.decode import (
    ImageDecodeError,
    PreprocessConfig,
    decode_and_preprocess,
    draft_scale,
    load_rgb,
    preprocess,
)

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
MODES = ("shortest", "longest", "squash")

# Draft-decoded JPEGs against the full decode, in uint8 levels, measured on photo_like() at 2003x1501 (DCT
# scale 1/4, 1.68x the target): mean 0.20-0.40, max 7-9 over orientations and modes (CMYK, L at 1/2:
# 0.28-0.48, 3-9). Mapping the draft box wrongly through the EXIF transpose gives mean 0.57-1.6, max 28-82.
DRAFT_MEAN_LEVELS = 0.6
DRAFT_MAX_LEVELS = 16


def cfg_for(mode: str = "shortest", fill_color: int = 0) -> PreprocessConfig:
    return PreprocessConfig(image_size=224, mean=MEAN, std=STD, resize_mode=mode, fill_color=fill_color)


def reference(data: bytes, cfg: PreprocessConfig) -> np.ndarray:
    """open_clip's path: exif_transpose(Image.open(f)).convert("RGB") through its eval transform."""
    import open_clip

    transform = open_clip.image_transform(
        cfg.image_size, is_train=False, mean=cfg.mean, std=cfg.std, interpolation=cfg.interpolation,
        resize_mode=cfg.resize_mode, fill_color=cfg.fill_color)
    with Image.open(io.BytesIO(data)) as img:
        return transform(ImageOps.exif_transpose(img).convert("RGB")).numpy()


def level_diff(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Absolute difference in uint8 levels (undoing Normalize's division by std)."""
    return np.abs(ours - ref) * np.asarray(STD, np.float32)[:, None, None] * 255


def photo_like(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Gradient, hard-edged shapes and grain: the mix a scaled decode could get wrong."""
    rng = np.random.default_rng(seed)
    w, h = size
    across = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    ramp = across * np.linspace(0.3, 1, h, dtype=np.float32)[:, None, None]
    arr = (40 + 180 * ramp * rng.uniform(0.3, 1, 3)).astype(np.float32)
    img = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        box = [x0, y0, x0 + rng.uniform(0.05, 0.4) * w, y0 + rng.uniform(0.05, 0.4) * h]
        draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    grain = rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + grain, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, orientation: int | None = None, **params) -> bytes:
    buffer = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_rgb16(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    ImageDraw.Draw(frames[0]).rectangle([10, 10, 40, 30], fill=(250, 250, 0))
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def palette_with_transparency() -> bytes:
    img = photo_like((90, 70), seed=3).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return encode(img, "PNG", transparency=5)


def exact_cases() -> dict[str, bytes]:
    """Inputs that are decoded at full size, so our arrays must equal the reference's."""
    rgb = photo_like((160, 120), seed=1)
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    gray16 = Image.fromarray((np.arange(120 * 160, dtype=np.uint16).reshape(120, 160) * 3))
    rng = np.random.default_rng(2)
    return {
        "jpeg-small": encode(rgb, "JPEG", quality=90),
        "jpeg-cmyk": encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "jpeg-gray": encode(rgb.convert("L"), "JPEG", quality=90),
        "png-rgb": encode(rgb, "PNG"),
        "png-rgba": encode(rgba, "PNG"),
        "png-l": encode(rgb.convert("L"), "PNG"),
        "png-la": encode(rgba.convert("LA"), "PNG"),
        "png-i16": encode(gray16, "PNG"),
        "png-rgb16": png_rgb16(rng.integers(0, 65536, (50, 70, 3))),
        "png-palette-transparency": palette_with_transparency(),
        "gif-animated": animated_gif(),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "tiff-cmyk": encode(rgb.convert("CMYK"), "TIFF"),
        "webp": encode(rgb, "WEBP", quality=80),
        "webp-rgba": encode(rgba, "WEBP", lossless=True),
        "1x1": encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "5000x12": encode(photo_like((5000, 12), seed=4), "PNG"),
        "12x300": encode(photo_like((12, 300), seed=5), "PNG"),
    }


EXACT = exact_cases()


def write(tmp_path: Path, name: str, data: bytes) -> bytes:
    """Round-trip through a file, as the indexer reads them."""
    path = tmp_path / name
    path.write_bytes(data)
    return path.read_bytes()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(EXACT))
def test_full_size_decodes_equal_reference(tmp_path: Path, name: str, mode: str) -> None:
    data = write(tmp_path, name, EXACT[name])
    cfg = cfg_for(mode)
    ours = decode_and_preprocess(data, cfg)
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, reference(data, cfg), rtol=0, atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_small_jpeg_equals_reference(tmp_path: Path, orientation: int) -> None:
    data = write(tmp_path, f"o{orientation}.jpg", encode(photo_like((150, 100), seed=6), "JPEG", orientation))
    for mode in MODES:
        np.testing.assert_allclose(decode_and_preprocess(data, cfg_for(mode)), reference(data, cfg_for(mode)),
                                   rtol=0, atol=1e-6)


def test_longest_pads_with_fill_colour() -> None:
    data = EXACT["png-rgb"]
    cfg = cfg_for("longest", fill_color=128)
    ours = decode_and_preprocess(data, cfg)
    np.testing.assert_allclose(ours, reference(data, cfg), rtol=0, atol=1e-6)
    assert np.allclose(ours[:, 0, :], ours[:, 0, :1])  # top rows are padding


def test_preprocess_of_pil_image_equals_reference() -> None:
    import open_clip

    rgb = photo_like((333, 251), seed=7)
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    for img in (rgb, rgba, rgb.convert("P"), rgb.convert("L")):
        for mode in MODES:
            cfg = cfg_for(mode)
            transform = open_clip.image_transform(224, is_train=False, mean=MEAN, std=STD, resize_mode=mode)
            np.testing.assert_allclose(preprocess(img, cfg), transform(img).numpy(), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def big_photo() -> Image.Image:
    # dimensions that are not multiples of 8 exercise the fractional box of a scaled decode
    return photo_like((2003, 1501), seed=8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_draft_jpeg_close_to_reference_in_every_orientation(tmp_path: Path, big_photo: Image.Image,
                                                            orientation: int) -> None:
    data = write(tmp_path, "big.jpg", encode(big_photo, "JPEG", orientation, quality=90))
    modes = MODES if orientation in (1, 6, 7) else ("shortest",)
    for mode in modes:
        cfg = cfg_for(mode)
        assert draft_scale(big_photo.size, cfg) > 1
        diff = level_diff(decode_and_preprocess(data, cfg), reference(data, cfg))
        assert diff.mean() <= DRAFT_MEAN_LEVELS and diff.max() <= DRAFT_MAX_LEVELS, (mode, diff.mean(), diff.max())


@pytest.mark.parametrize("kind", ["CMYK", "L", "progressive", "MPO"])
def test_draft_jpeg_other_kinds(big_photo: Image.Image, kind: str) -> None:
    small = big_photo.resize((1203, 901))
    if kind == "MPO":
        data = encode(small, "MPO", quality=90, save_all=True, append_images=[small.rotate(90)])
    elif kind == "progressive":
        data = encode(small, "JPEG", quality=90, progressive=True)
    else:
        data = encode(small.convert(kind), "JPEG", quality=90)
    cfg = cfg_for()
    assert draft_scale(small.size, cfg) == 2
    diff = level_diff(decode_and_preprocess(data, cfg), reference(data, cfg))
    assert diff.mean() <= DRAFT_MEAN_LEVELS and diff.max() <= DRAFT_MAX_LEVELS, (diff.mean(), diff.max())


def test_draft_embedding_within_fidelity_bound(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The issue's bound, with the tiny model: worst (1 - cos) to the reference <= 1% of the mean between photos."""
    import open_clip
    import torch

    model = open_clip.create_model_and_transforms(f"local-dir:{tiny_model_dir}")[0].eval()
    photos = [encode(photo_like((1603, 1201), seed=20 + i), "JPEG", 6 if i % 2 else None, quality=90)
              for i in range(4)]
    cfg = cfg_for()

    def embed(arrays: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            features = model.encode_image(torch.from_numpy(np.stack(arrays)))
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    ref = embed([reference(d, cfg) for d in photos])
    ours = embed([decode_and_preprocess(d, cfg) for d in photos])
    between = (1 - ref @ ref.T)[~np.eye(len(photos), dtype=bool)].mean()
    worst = (1 - (ours * ref).sum(axis=1)).max()
    assert worst <= 0.01 * between, (worst, between)


def test_draft_scale_choices() -> None:
    cfg = cfg_for()
    assert draft_scale((4000, 3000), cfg) == 8
    assert draft_scale((3000, 4000), cfg) == 8
    assert draft_scale((2003, 1501), cfg) == 4
    assert draft_scale((1000, 750), cfg) == 2
    assert draft_scale((300, 200), cfg) == 1
    assert draft_scale((5000, 12), cfg) == 1
    assert draft_scale((4000, 3000), cfg_for("longest")) == 8


def test_load_rgb_is_full_size_and_upright() -> None:
    data = encode(photo_like((300, 200)), "JPEG", orientation=6)
    img = load_rgb(data)
    assert img.mode == "RGB" and img.size == (200, 300)


def bomb_png() -> bytes:
    """A valid PNG header declaring 60000x60000 pixels, with a tiny body."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


BAD_INPUTS = {
    "empty": b"",
    "truncated-jpeg": encode(photo_like((400, 300)), "JPEG", quality=90)[:3000],
    "text-named-jpg": b"this is not an image, despite its name\n",
    "bomb-png": bomb_png(),
    "jpeg-header-only": b"\xff\xd8\xff\xe0" + b"\x00" * 20,
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_inputs_raise_one_line_error(tmp_path: Path, name: str) -> None:
    data = write(tmp_path, f"{name}.jpg", BAD_INPUTS[name])
    for decode in (lambda d: decode_and_preprocess(d, cfg_for()), load_rgb):
        started = time.perf_counter()
        with pytest.raises(ImageDecodeError) as info:
            decode(data)
        assert time.perf_counter() - started < 2.0
        message = str(info.value)
        assert message and "\n" not in message


def test_bomb_is_named_as_such() -> None:
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_and_preprocess(bomb_png(), cfg_for())


def test_imaging_does_not_import_torch() -> None:
    """Decode workers import only this module; torch would cost seconds and memory per worker."""
    code = "import sys, indexer.images.decode; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert python(code, cwd=REPO).returncode == 0
