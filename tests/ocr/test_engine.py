"""The OCR engine on rendered pictures (real trained PP-OCRv4 models from the rapidocr wheel): English and Chinese
lines with their boxes, text turned by up to 10 degrees or upside down, every EXIF orientation, a picture
30,000 px long read in tiles, a huge one scaled, and nothing read where there is no text."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from helpers.texts import background, text_picture

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra: pip install 'searchengine[ocr]'")

from indexer.images.decode import load_rgb  # noqa: E402
from indexer.ocr import engine as engine_module  # noqa: E402
from indexer.ocr.engine import OcrEngine, _tiles  # noqa: E402


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine(threads=1)


def texts(lines) -> str:
    return " ".join(line.text for line in lines).lower()


def test_english_lines_in_reading_order_with_their_boxes(engine):
    lines = engine.read(text_picture(["BOARDING PASS", "Gate 12 Seat 4A"], text_px=32, seed=1))
    assert [line.text.lower() for line in lines] == ["boarding pass", "gate 12 seat 4a"]
    for line in lines:
        assert line.score > 0.9
        xs, ys = [p[0] for p in line.box], [p[1] for p in line.box]
        assert 0.15 < min(xs) < max(xs) < 0.85  # centred text, boxes as fractions of the picture
    assert max(p[1] for p in lines[0].box) <= min(p[1] for p in lines[1].box) + 0.01  # the first line is above


def test_chinese(engine):
    lines = engine.read(text_picture(["增值税发票", "金额合计"], text_px=36, seed=2, cjk=True, dark=True))
    assert "增值税发票" in "".join(line.text for line in lines)
    assert "金额合计" in "".join(line.text for line in lines)


@pytest.mark.parametrize("angle", [-10, 7])
def test_turned_text(engine, angle):
    assert "receipt" in texts(engine.read(text_picture(["Receipt total"], text_px=36, seed=3, angle=angle)))


def test_upside_down_text_is_read_the_right_way_up(engine):
    upside_down = text_picture(["Welcome home"], text_px=40, seed=4).rotate(180)
    assert "welcome home" in texts(engine.read(upside_down))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_read_upright(engine, orientation):
    """The file stores the pixels turned; its EXIF orientation says how to show them (the decode applies it)."""
    upright = text_picture(["Platform seven"], size=(480, 320), text_px=36, seed=5)
    undo = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}
    stored = upright.transpose(undo[orientation]) if orientation in undo else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    assert "platform seven" in texts(engine.read(load_rgb(buffer.getvalue())))


def test_a_picture_without_text_reads_nothing(engine):
    picture = background((640, 480), seed=6)
    assert not engine.has_text(picture)
    assert engine.read(picture) == []


def test_a_30000_px_strip_is_read_in_tiles(engine):
    strip = Image.new("RGB", (600, 30_000), (240, 240, 240))
    strip.paste(text_picture(["Opening balance"], size=(600, 300), text_px=32, seed=7, photo=False), (0, 0))
    strip.paste(text_picture(["Closing balance"], size=(600, 300), text_px=32, seed=8, photo=False), (0, 29_700))
    read = texts(engine.read(strip))
    assert "opening balance" in read and "closing balance" in read
    assert read.count("balance") == 2  # tiles overlap; each line is kept once


def test_tiles_cover_a_strip_once():
    for width, height in [(600, 30_000), (30_000, 900), (1000, 3500)]:
        tiles = _tiles(width, height)
        owned = sorted((own[1], own[3]) if height > width else (own[0], own[2]) for _, own in tiles)
        assert owned[0][0] == 0 and owned[-1][1] == max(width, height)
        assert all(a[1] == b[0] for a, b in zip(owned, owned[1:]))  # no gap, no overlap between owned parts
        assert all(c[2] - c[0] <= width and c[3] - c[1] <= height for c, _ in tiles)
    assert _tiles(640, 480) == [((0, 0, 640, 480), (0, 0, 640, 480))]


def test_a_huge_picture_is_scaled_not_refused(engine, monkeypatch):
    monkeypatch.setattr(engine_module, "MAX_PIXELS", 300_000)  # as a 30,000 x 30,000 picture is to the real bound
    big = text_picture(["Station square"], size=(1600, 1200), text_px=90, seed=9)
    assert "station square" in texts(engine.read(big))
