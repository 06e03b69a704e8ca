"""Image decoding and preprocessing, faithful to open_clip's reference path.

Reference: ``preprocess(ImageOps.exif_transpose(Image.open(f)).convert("RGB"))``.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

# A 60000x60000 PNG header must be refused before any pixel is allocated.
Image.MAX_IMAGE_PIXELS = 178_956_970
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class ImageDecodeError(Exception):
    """The bytes are not a readable image; str(exc) is a one-line reason."""


@dataclass(frozen=True)
class PreprocessConfig:
    """What open_clip's eval transform does: resize, centre crop, normalise."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_rgb(data: bytes) -> Image.Image:
    """Decode bytes to an upright RGB image (EXIF orientation applied, first frame of animations)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            return upright.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large (decompression bomb): {exc}") from None
    except Exception as exc:  # PIL raises many types for bad input; each becomes a one-line reason
        raise ImageDecodeError(f"cannot decode image ({_reason(exc)})") from None


def preprocess(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """Resize (shortest side, bicubic), centre crop and normalise to a float32 CHW array."""
    from torchvision.transforms import functional as F
    from torchvision.transforms import InterpolationMode

    interpolation = InterpolationMode(cfg.interpolation)
    size = cfg.image_size
    if cfg.resize_mode == "squash":
        img = F.resize(img, [size, size], interpolation=interpolation)
    else:
        img = F.resize(img, size, interpolation=interpolation)
        img = F.center_crop(img, [size, size])
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(cfg.mean, np.float32)) / np.asarray(cfg.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def decode_and_preprocess(data: bytes, cfg: PreprocessConfig) -> np.ndarray:
    """Bytes to the model's input array; raises ImageDecodeError with a one-line reason."""
    img = load_rgb(data)
    try:
        return preprocess(img, cfg)
    except Exception as exc:
        raise ImageDecodeError(f"cannot preprocess image ({_reason(exc)})") from None
