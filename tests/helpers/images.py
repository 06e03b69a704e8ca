"""Generate small test images and folders: every supported format, odd files and bad files, numbered small photos,
HEIC and AVIF bytes (HEIC needs pillow-heif's encoder, a test-only dependency)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

GOOD = [
    "a.jpg", "b.JPEG", "c.png", "d.webp", "e.gif", "f.bmp", "g.tiff", "h.TIF",
    "rgba.png", "cmyk.jpg", "sixteen.png", "palette.png", "tiny.png", "wide.png", "rotated.jpg",
    "animated.gif", "grey.jpg", "unicodé 照片.jpg", "sub/deeper/n.png", "folder.jpg/inside.png",
]
BAD = ["empty.jpg", "text.png", "truncated.jpg", "bomb.png"]
SMALL = (48, 32)
ORIENTATION = 0x0112


def photo(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A smooth, varied RGB picture (gradients and a block), different per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(0, 255, 3)
    freq = rng.uniform(0.02, 0.2, 3)
    img = np.stack([(base[c] + 80 * np.sin(freq[c] * (x + 2 * y) + c)) % 256 for c in range(3)], axis=-1)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.uniform(0, 255, 3)
    return Image.fromarray(img.astype(np.uint8), "RGB")


def bomb_png() -> bytes:
    """A valid PNG header declaring 60000x60000 pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")


def write_good(folder: Path, name: str, seed: int) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img = photo(seed)
    stem = name.lower()
    if stem.startswith("rgba"):
        img.putalpha(Image.fromarray((np.arange(96 * 64).reshape(64, 96) % 256).astype(np.uint8)))
        img.save(path)
    elif stem.startswith("cmyk"):
        img.convert("CMYK").save(path, "JPEG")
    elif stem.startswith("sixteen"):
        arr = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        Image.fromarray(arr).save(path)
    elif stem.startswith("palette"):
        pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        pal.info["transparency"] = 0
        pal.save(path, transparency=0)
    elif stem.startswith("tiny"):
        Image.new("RGB", (1, 1), (200, 10, 10)).save(path)
    elif stem.startswith("wide"):
        photo(seed, (5000, 12)).save(path)
    elif stem.startswith("rotated"):
        exif = Image.Exif()
        exif[0x0112] = 6
        img.save(path, "JPEG", exif=exif.tobytes())
    elif stem.startswith("animated"):
        frames = [photo(seed + k) for k in range(3)]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    elif stem.startswith("grey"):
        img.convert("L").save(path, "JPEG")
    else:
        img.save(path, format=_format(name))
    return path


def _format(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".gif": "GIF", ".bmp": "BMP",
            ".tif": "TIFF", ".tiff": "TIFF"}[ext]


def write_bad(folder: Path) -> None:
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not an image\n")
    buf = io.BytesIO()
    photo(99, (256, 256)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "bomb.png").write_bytes(bomb_png())


def make_library_folder(folder: Path, bad: bool = True) -> dict[str, Path]:
    """Every GOOD image (seeded by position) plus, optionally, the BAD files; returns name -> path of the good."""
    folder.mkdir(parents=True, exist_ok=True)
    good = {name: write_good(folder, name, seed) for seed, name in enumerate(GOOD)}
    if bad:
        write_bad(folder)
    (folder / "notes.txt").write_text("not an image extension: ignored\n")
    return good


def write_non_utf8(folder: Path, seed: int = 500) -> bytes:
    """An image whose file name is not valid UTF-8; returns its absolute path as bytes."""
    path = os.path.join(os.fsencode(folder), b"caf\xe9-\xff.png")
    buf = io.BytesIO()
    photo(seed).save(buf, "PNG")
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())
    return os.path.abspath(path)


def make_photos(folder: Path, count: int, first_seed: int = 1000) -> list[Path]:
    """`count` distinct small PNGs (named by seed), a few in a subfolder; returns their paths."""
    paths = []
    for n in range(count):
        path = folder / ("sub" if n % 5 == 4 else "") / f"p{n + first_seed - 1000:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(first_seed + n, SMALL).save(path)
        paths.append(path)
    return paths


def heic(img: Image.Image, **kwargs) -> bytes:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, quality=92, chroma=444, **kwargs)
    return buf.getvalue()


def avif(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "AVIF", quality=92, subsampling="4:4:4", **kwargs)
    return buf.getvalue()


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: turn 90 degrees clockwise to show
    return exif.tobytes()
