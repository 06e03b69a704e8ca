"""Thumbnails and previews, cached in the library by content hash (a rename or copy needs no new one).

`index` makes each thumbnail from the image it already decoded for the model (reduced-size JPEG decode:
its short side is at least 1.5x the model's input, more than a 320 px thumbnail needs). Libraries made
before get theirs on first request. Files are written aside and renamed, so a reader never sees half of one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

    from indexer.images.decode import ModelImage

THUMBNAIL_DIR = "thumbnails"
PREVIEW_DIR = "previews"
THUMBNAIL_SIZE = 320
PREVIEW_SIZE = 1600
THUMBNAIL_QUALITY = 80
PREVIEW_QUALITY = 85


def cache_path(library: Path, kind: str, content_hash: bytes) -> Path:
    """library/thumbnails/ab/abcdef....jpg (or previews/): two-level fan-out keeps folders small."""
    name = content_hash.hex()
    folder = THUMBNAIL_DIR if kind == "thumbnail" else PREVIEW_DIR
    return library / folder / name[:2] / f"{name}.jpg"


def fitted_size(size: tuple[int, int], bound: int) -> tuple[int, int]:
    """The size that fits `size` within bound x bound keeping its aspect ratio (never enlarged)."""
    w, h = size
    scale = min(1.0, bound / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def thumbnail_from_model_image(decoded: "ModelImage") -> "Image.Image":
    """Resample the part of the decoded image that is the original (JPEG drafts may overhang) to fit 320 px."""
    from PIL import Image

    size = fitted_size(decoded.full_size, THUMBNAIL_SIZE)
    return decoded.image.resize(size, Image.Resampling.BILINEAR, box=decoded.box, reducing_gap=2.0)


def encode_jpeg(img: "Image.Image", quality: int) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality, optimize=False, progressive=False)
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """Write aside then rename: a crash leaves the old file or none, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, aside = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(aside, path)
    except BaseException:
        try:
            os.unlink(aside)
        except OSError:
            pass
        raise


def store_thumbnail(library: Path, content_hash: bytes, decoded: "ModelImage") -> None:
    """Make and cache the thumbnail of a decoded image, unless one exists for that content already."""
    target = cache_path(library, "thumbnail", content_hash)
    if target.exists():
        return
    write_atomically(target, encode_jpeg(thumbnail_from_model_image(decoded), THUMBNAIL_QUALITY))


def frame_cache_key(content_hash: bytes, frame_s: float) -> bytes:
    """The cache key of a video frame's thumbnail or preview: the video's content and the frame's millisecond."""
    import hashlib

    return hashlib.blake2b(content_hash + b"@%d" % round(frame_s * 1000), digest_size=16).digest()


def store_thumbnail_bytes(library: Path, key: bytes, jpeg: bytes) -> None:
    """Cache an already encoded thumbnail (a video frame's, made by the worker that decoded it)."""
    target = cache_path(library, "thumbnail", key)
    if not target.exists():
        write_atomically(target, jpeg)


def render(data: bytes, kind: str) -> bytes:
    """A thumbnail or preview JPEG from an image file's bytes (EXIF orientation applied)."""
    from PIL import Image

    from indexer.images.decode import ImageDecodeError, PreprocessConfig, load_for_model

    bound = THUMBNAIL_SIZE if kind == "thumbnail" else PREVIEW_SIZE
    # A model config whose short-side target makes the JPEG draft keep enough pixels for `bound`.
    cfg = PreprocessConfig(image_size=max(1, bound * 2 // 3), mean=(0, 0, 0), std=(1, 1, 1))
    decoded = load_for_model(data, cfg)
    size = fitted_size(decoded.full_size, bound)
    try:
        img = decoded.image.resize(size, Image.Resampling.LANCZOS, box=decoded.box, reducing_gap=3.0)
        return encode_jpeg(img, THUMBNAIL_QUALITY if kind == "thumbnail" else PREVIEW_QUALITY)
    except Exception as exc:  # PIL raises many types for odd images; the caller reports one line
        raise ImageDecodeError(f"cannot render image ({type(exc).__name__})") from None
