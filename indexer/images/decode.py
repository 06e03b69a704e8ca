"""Image decoding and preprocessing, faithful to open_clip's reference path.

Reference: ``preprocess(ImageOps.exif_transpose(Image.open(f)).convert("RGB"))`` where ``preprocess`` is
open_clip's eval transform (torchvision Resize / CenterCrop / ToTensor / Normalize on a PIL image).
This module reproduces it with PIL and numpy only, so decode workers never import torch:
non-JPEG images give bit-identical arrays; large JPEGs are decoded at reduced size (libjpeg DCT scaling,
``Image.draft``) and then resampled with the exact full-resolution geometry, which keeps them close.
"""
from __future__ import annotations

import functools
import io
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import ExifTags, Image, ImageOps

from indexer.images.metadata import ImageMetadata, read_metadata

# A 60000x60000 PNG header must be refused before any pixel is allocated.
Image.MAX_IMAGE_PIXELS = 178_956_970
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _register_heif() -> None:
    """HEIC/HEIF through pi-heif (libheif + libde265, LGPL, decode-only); AVIF is Pillow's own (>= 11.3 wheels).

    pi-heif applies the container's rotation and mirror and resets EXIF orientation to 1, so the
    exif_transpose below never turns an image twice.
    """
    try:
        from pi_heif import register_heif_opener
    except ImportError:  # an install without it still reads every other format
        return
    register_heif_opener()


_register_heif()

# Smallest allowed ratio between the draft-decoded size and the model's resize target. Measured on
# synthetic 4:3 photos, ViT-B-32 random weights: at 1.5-2.0 the worst (1 - cos) to the reference is
# <= 1e-4 of the mean distance between photos (the bound is 1e-2) and uint8 pixels differ by <= 1 on
# average; at 1.0 it is 1e-3. 12 MP photos (short side 3000, target 224) decode at 1/8 scale (ratio 1.67).
DRAFT_MARGIN = 1.5
_DRAFT_SCALES = (8, 4, 2)

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

Box = tuple[float, float, float, float]


class ImageDecodeError(Exception):
    """The bytes are not a readable image; str(exc) is a one-line reason."""


@dataclass(frozen=True)
class PreprocessConfig:
    """What open_clip's eval transform does: resize, centre crop (or pad), normalise."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0


@dataclass(frozen=True)
class ModelImage:
    """An upright RGB image, possibly decoded at reduced size, and where the full-resolution original lies in it."""

    image: Image.Image
    full_size: tuple[int, int]
    box: Box
    metadata: ImageMetadata | None = None  # when asked for: read from the same open image, before the draft


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _decode_error(exc: BaseException) -> ImageDecodeError:
    if isinstance(exc, Image.DecompressionBombError):
        return ImageDecodeError(f"image too large (decompression bomb): {str(exc).strip().splitlines()[0]}")
    if isinstance(exc, Image.UnidentifiedImageError):
        return ImageDecodeError("cannot decode image (not an image, or a format Pillow cannot read)")
    return ImageDecodeError(f"cannot decode image ({_reason(exc)})")


def load_rgb(data: bytes) -> Image.Image:
    """Decode bytes to an upright full-resolution RGB image (EXIF orientation applied, first frame of animations)."""
    if not data:
        raise ImageDecodeError("cannot decode image (empty file)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            return _upright_rgb(img)
    except Exception as exc:  # PIL raises many types for bad input; each becomes a one-line reason
        raise _decode_error(exc) from None


def load_reduced(data: bytes, long_side: int) -> Image.Image:
    """Decode bytes upright in RGB, a JPEG at the smallest DCT scale whose long side keeps `long_side` (a quick
    look: OCR's gate asks it whether a picture holds text at all); other formats in full."""
    if not data:
        raise ImageDecodeError("cannot decode image (empty file)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            ratio = long_side / max(img.size)
            if ratio < 1:
                img.draft("RGB", (max(1, math.ceil(img.width * ratio)), max(1, math.ceil(img.height * ratio))))
            return _upright_rgb(img)
    except Exception as exc:
        raise _decode_error(exc) from None


def load_for_model(data: bytes, cfg: PreprocessConfig, with_metadata: bool = False) -> ModelImage:
    """Decode bytes for ``cfg``: JPEGs at the smallest DCT scale that keeps DRAFT_MARGIN, others in full."""
    if not data:
        raise ImageDecodeError("cannot decode image (empty file)")
    metadata = None
    try:
        with Image.open(io.BytesIO(data)) as img:
            full = img.size
            if with_metadata:
                metadata = read_metadata(img)  # never raises; its parsed EXIF is reused below
            box: Box = (0.0, 0.0, float(full[0]), float(full[1]))
            scale = draft_scale(full, cfg)
            if scale > 1:
                drafted = img.draft(img.mode, (full[0] // scale, full[1] // scale))
                if drafted is not None:
                    box = tuple(float(v) for v in drafted[1])
            method = _TRANSPOSE.get(img.getexif().get(ExifTags.Base.Orientation, 1))
            stored_size = img.size
            rgb = _upright_rgb(img)
    except Exception as exc:
        raise _decode_error(exc) from None
    if method is None:
        return ModelImage(rgb, full, box, metadata)
    return ModelImage(rgb, _transpose_size(full, method), _transpose_box(box, stored_size, method), metadata)


def _upright_rgb(img: Image.Image) -> Image.Image:
    ImageOps.exif_transpose(img, in_place=True)
    return img if img.mode == "RGB" else img.convert("RGB")


def draft_scale(size: tuple[int, int], cfg: PreprocessConfig) -> int:
    """The largest JPEG DCT scale (1, 2, 4 or 8) that keeps the decoded image DRAFT_MARGIN times the resize target."""
    target_w, target_h = resize_target(size, cfg)
    reduction = min(size[0] / max(target_w, 1), size[1] / max(target_h, 1))
    return next((s for s in _DRAFT_SCALES if reduction / s >= DRAFT_MARGIN), 1)


def _transpose_size(size: tuple[int, int], method: Image.Transpose) -> tuple[int, int]:
    swaps = method in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270,
                       Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE)
    return (size[1], size[0]) if swaps else size


def _transpose_box(box: Box, size: tuple[int, int], method: Image.Transpose) -> Box:
    """Where ``box`` of an image of ``size`` lands after ``image.transpose(method)``."""
    x0, y0, x1, y1 = box
    w, h = size
    return {
        Image.Transpose.FLIP_LEFT_RIGHT: (w - x1, y0, w - x0, y1),
        Image.Transpose.FLIP_TOP_BOTTOM: (x0, h - y1, x1, h - y0),
        Image.Transpose.ROTATE_180: (w - x1, h - y1, w - x0, h - y0),
        Image.Transpose.ROTATE_90: (y0, w - x1, y1, w - x0),
        Image.Transpose.ROTATE_270: (h - y1, x0, h - y0, x1),
        Image.Transpose.TRANSPOSE: (y0, x0, y1, x1),
        Image.Transpose.TRANSVERSE: (h - y1, w - x1, h - y0, w - x0),
    }[method]


def resize_target(size: tuple[int, int], cfg: PreprocessConfig) -> tuple[int, int]:
    """(width, height) that open_clip's eval resize gives an image of ``size`` (before crop or pad)."""
    w, h = size
    target = cfg.image_size
    if cfg.resize_mode == "squash":
        return target, target
    if cfg.resize_mode == "longest":
        # timm's ResizeKeepRatio with longest=1, as open_clip uses it
        ratio = max(h / target, w / target)
        return round(w / ratio), round(h / ratio)
    if cfg.resize_mode != "shortest":
        raise ValueError(f"unknown resize_mode {cfg.resize_mode!r}")
    # torchvision's Resize(int): the short side becomes the target, the long side is truncated
    if w <= h:
        return target, int(target * h / w)
    return int(target * w / h), target


def preprocess(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """Resize, centre crop (or pad) and normalise to a float32 CHW array, like open_clip's eval transform."""
    return preprocess_model_image(ModelImage(img, img.size, (0.0, 0.0, float(img.width), float(img.height))), cfg)


def preprocess_model_image(decoded: ModelImage, cfg: PreprocessConfig) -> np.ndarray:
    """Resample the part of ``decoded.image`` that is the original to the size open_clip gives the original."""
    img = decoded.image
    target = resize_target(decoded.full_size, cfg)
    full_box = (0.0, 0.0, float(img.width), float(img.height))
    if target != img.size or decoded.box != full_box:
        resample = Image.Resampling.BILINEAR if cfg.interpolation == "bilinear" else Image.Resampling.BICUBIC
        img = img.resize(target, resample, box=decoded.box)
    # open_clip converts after resizing (MaybeConvertMode), which matters for P and RGBA given to preprocess()
    img = img if img.mode == "RGB" else img.convert("RGB")
    pixels = _center_crop_or_pad(np.asarray(img), cfg.image_size, cfg.fill_color)
    return _normalise(pixels, cfg.mean, cfg.std)


def crop_for_model(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """The (H, W, 3) uint8 crop `preprocess` normalises: a quarter of the float array's bytes while in flight."""
    target = resize_target(img.size, cfg)
    if target != img.size:
        resample = Image.Resampling.BILINEAR if cfg.interpolation == "bilinear" else Image.Resampling.BICUBIC
        img = img.resize(target, resample)
    img = img if img.mode == "RGB" else img.convert("RGB")
    return np.ascontiguousarray(_center_crop_or_pad(np.asarray(img), cfg.image_size, cfg.fill_color))


def normalise_crops(crops: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(N, H, W, 3) uint8 crops to the model's (N, 3, H, W) float32 input, exactly as `preprocess` does."""
    return np.stack([_normalise(c, cfg.mean, cfg.std) for c in crops]) if len(crops) else \
        np.empty((0, 3, cfg.image_size, cfg.image_size), np.float32)


def _center_crop_or_pad(pixels: np.ndarray, size: int, fill: int) -> np.ndarray:
    """torchvision's center_crop / open_clip's center_crop_or_pad on an (H, W, 3) uint8 array."""
    h, w = pixels.shape[:2]
    if size > w or size > h:
        top, left = max(size - h, 0) // 2, max(size - w, 0) // 2
        padded = np.full((max(h, size), max(w, size), 3), fill, dtype=np.uint8)
        padded[top:top + h, left:left + w] = pixels
        pixels = padded
        h, w = pixels.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return pixels[top:top + size, left:left + size]


@functools.lru_cache(maxsize=8)
def _lookup(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """Per channel, the float32 value ToTensor + Normalize give each uint8 level (the same float32 operations)."""
    levels = np.arange(256, dtype=np.float32) / np.float32(255)
    return (levels[None, :] - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def _normalise(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    lut = _lookup(tuple(mean), tuple(std))
    return np.ascontiguousarray(np.stack([lut[c][pixels[:, :, c]] for c in range(3)]))


def decode_and_preprocess(data: bytes, cfg: PreprocessConfig) -> np.ndarray:
    """Bytes to the model's input array; raises ImageDecodeError with a one-line reason."""
    return decode_for_index(data, cfg, with_metadata=False)[0]


def decode_for_index(data: bytes, cfg: PreprocessConfig, with_metadata: bool = True,
                     on_decoded: Callable[[ModelImage], None] | None = None
                     ) -> tuple[np.ndarray, ImageMetadata | None]:
    """The model's input array and the image's metadata, from one open of the bytes.

    `on_decoded` sees the decoded image first (index makes its thumbnail from it: no second decode).
    """
    decoded = load_for_model(data, cfg, with_metadata)
    if on_decoded is not None:
        on_decoded(decoded)
    try:
        return preprocess_model_image(decoded, cfg), decoded.metadata
    except Exception as exc:
        raise ImageDecodeError(f"cannot preprocess image ({_reason(exc)})") from None
