"""Pictures with known words: text rendered with Debian's fonts (fonts-dejavu-core, fonts-wqy-microhei) on a
plain or photo-like background; tests that need a font skip, saying which package to install, where it is missing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

LATIN_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
PACKAGES = {LATIN_FONT: "fonts-dejavu-core", CJK_FONT: "fonts-wqy-microhei"}


def font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    if not path.exists():
        pytest.skip(f"font {path} missing (apt-get install {PACKAGES[path]})")
    return ImageFont.truetype(str(path), size)


def background(size: tuple[int, int], seed: int, dark: bool = False, photo: bool = True) -> Image.Image:
    """A photo-like background: a smooth colour gradient with blotches and grain (or a plain grey)."""
    width, height = size
    if not photo:
        return Image.new("RGB", size, (30, 30, 30) if dark else (235, 235, 235))
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = (60 if dark else 170) + 40 * np.sin(x / 90 + rng.uniform(0, 6))[..., None] * np.array([1, .7, .4])
    base = base + 30 * (y / height)[..., None]
    blotches = Image.fromarray(np.uint8(rng.random((max(1, height // 16), max(1, width // 16), 3)) * 255))
    blotches = np.asarray(blotches.resize(size, Image.Resampling.BICUBIC), np.float32)
    pixels = base + (blotches - 128) * 0.35 + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.uint8(np.clip(pixels, 0, 255)))


def text_picture(lines: list[str], size: tuple[int, int] = (640, 480), text_px: int = 32, seed: int = 0,
                 dark: bool = False, photo: bool = True, angle: float = 0.0, cjk: bool = False) -> Image.Image:
    """`lines` of text, centred one under the other, at `text_px` pixels, turned by `angle` degrees."""
    img = background(size, seed, dark, photo)
    face = font(CJK_FONT if cjk else LATIN_FONT, text_px)
    layer = Image.new("L", size, 0)
    draw = ImageDraw.Draw(layer)
    step = int(text_px * 1.6)
    top = (size[1] - step * len(lines)) // 2
    for n, line in enumerate(lines):
        box = draw.textbbox((0, 0), line, font=face)
        draw.text(((size[0] - (box[2] - box[0])) // 2 - box[0], top + n * step - box[1]), line, font=face, fill=255)
    if angle:
        layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC)
    ink = (235, 235, 235) if dark else (20, 20, 25)
    img.paste(Image.new("RGB", size, ink), (0, 0), layer)
    return img
