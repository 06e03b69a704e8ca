"""The OCR engine: RapidOCR's PP-OCRv4 ONNX models (detection, angle classifier, recognition; Chinese and English),
driven step by step so that a picture without text costs one small detection.

A gate runs first: the detector on a reduced copy (long side GATE_SIDE), asking only whether any pixels look
like text; where none do, the picture has no text and nothing more is done. Where some do, detection runs at
up to DETAIL_SIDE to find the lines, small ones too, and each line is cut out of the full working image,
turned upright by the angle classifier (0 or 180 degrees) and recognised. Very long pictures (receipts, scrolled screenshots) are read in overlapping tiles,
so that their text keeps its size; huge ones are scaled down to MAX_PIXELS first, never refused.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import OcrUnavailableError
from indexer.ocr.gate import GATE_SIDE, TextGate
from indexer.ocr.lines import TextLine

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["GATE_SIDE", "OcrEngine", "check_available", "engine_name", "unavailable_reason"]
PACKAGE = "rapidocr_onnxruntime"
INSTALL_HINT = "text reading (--ocr) needs the ocr extra: pip install 'searchengine[ocr]'"
# Where the gate opened: the lines are found at up to this long side (4000x3000 photo: 0.27 s against 0.48 s at
# 1280 and 0.68 s upscaled, 1 thread), so lines of 1/120 of the long side and up (33 px in a 4000 px photo).
DETAIL_SIDE = 960
MIN_SCORE = 0.5  # recognitions below this confidence are noise more often than text (RapidOCR's own default)
MAX_PIXELS = 40_000_000
STRIP_ASPECT = 3.0  # a picture longer than this (to its width) is read in tiles of TILE_ASPECT
TILE_ASPECT = 2.0
MIN_SIDE = 8  # smaller than this on a side: nothing readable


def unavailable_reason() -> str | None:
    """Why OCR cannot run here (the extra is not installed), or None."""
    return None if importlib.util.find_spec(PACKAGE) is not None else INSTALL_HINT


def check_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise OcrUnavailableError(reason)


def engine_name() -> str:
    """What reads the text, recorded with each picture's text (a later engine may read it again)."""
    from importlib.metadata import version

    return f"{PACKAGE} {version(PACKAGE)} PP-OCRv4"


class OcrEngine:
    """One engine per process (importing and loading its three models takes ~0.3 s); not thread-safe. The gate
    alone (what the decode workers ask) is indexer.ocr.gate.TextGate."""

    def __init__(self, threads: int = 1):
        check_available()
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        from rapidocr_onnxruntime import RapidOCR
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

        self._ocr = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
        self._det = self._ocr.text_det
        self._gate = TextGate(session=self._det.infer.session)
        self._detail = DetPreProcess(DETAIL_SIDE, "max", self._det.mean, self._det.std)

    def read(self, image: "Image.Image") -> list[TextLine]:
        """The lines of an upright RGB image, in reading order, boxes as fractions of its size."""
        from PIL import Image as PILImage

        image = _bounded(image if image.mode == "RGB" else image.convert("RGB"))
        width, height = image.size
        if min(width, height) < MIN_SIDE:
            return []
        found: list[tuple[np.ndarray, str, float]] = []
        rgb = np.asarray(image)
        for box, own in _tiles(width, height):
            tile = rgb[box[1]:box[3], box[0]:box[2]]
            if not self._gate.has_text(image if box == (0, 0, width, height) else PILImage.fromarray(tile)):
                continue
            for corners, text, score in self._read_tile(np.ascontiguousarray(tile[:, :, ::-1])):
                corners = corners + np.array([box[0], box[1]], np.float32)
                cx, cy = corners.mean(axis=0)
                if own[0] <= cx < own[2] and own[1] <= cy < own[3]:  # a line in an overlap belongs to one tile
                    found.append((corners, text, score))
        scale = np.array([width, height], np.float32)
        return [TextLine(text, round(float(score), 4),
                         tuple((round(float(x), 5), round(float(y), 5)) for x, y in corners / scale))  # type: ignore[arg-type]
                for corners, text, score in found]

    def has_text(self, image: "Image.Image") -> bool:
        """The gate alone (indexer/ocr/gate.py): whether `image` holds text at all; `read` asks it of every tile."""
        return self._gate.has_text(image)

    def _read_tile(self, bgr: np.ndarray) -> list[tuple[np.ndarray, str, float]]:
        """The lines of a tile the gate opened for (BGR), in reading order."""
        boxes = self._detect(bgr)
        if not len(boxes):
            return []
        boxes = self._ocr.sorted_boxes(np.asarray(boxes))
        crops = self._ocr.get_crop_img_list(bgr, boxes)
        crops, _, _ = self._ocr.text_cls(crops)
        recognised, _ = self._ocr.text_rec(crops)
        return [(np.asarray(box, np.float32), text.strip(), float(score))
                for box, (text, score) in zip(boxes, recognised) if score >= MIN_SCORE and text.strip()]

    @staticmethod
    def is_strip(size: tuple[int, int]) -> bool:
        """Read in tiles (a reduced copy of the whole would shrink its text away)."""
        return max(size) > min(size) * STRIP_ASPECT

    def _detect(self, bgr: np.ndarray) -> np.ndarray:
        """Text boxes (n, 4, 2) in `bgr`'s pixels, found on a copy whose long side is at most DETAIL_SIDE."""
        det = self._det
        height, width = bgr.shape[:2]
        tensor = self._detail(bgr)
        if tensor is None:
            return np.empty((0, 4, 2), np.float32)
        boxes, _ = det.postprocess_op(det.infer(tensor)[0], (height, width))
        boxes = det.filter_tag_det_res(boxes, (height, width))
        return np.asarray(boxes, np.float32).reshape(-1, 4, 2)


def _bounded(image: "Image.Image") -> "Image.Image":
    """The image, scaled down to at most MAX_PIXELS (a 30,000 px picture is read smaller, not refused)."""
    pixels = image.width * image.height
    if pixels <= MAX_PIXELS:
        return image
    from PIL import Image as PILImage

    ratio = (MAX_PIXELS / pixels) ** 0.5
    size = (max(1, int(image.width * ratio)), max(1, int(image.height * ratio)))
    return image.resize(size, PILImage.Resampling.LANCZOS, reducing_gap=3.0)


Box = tuple[int, int, int, int]


def _tiles(width: int, height: int) -> list[tuple[Box, Box]]:
    """(crop box, owned box) pairs covering the image: one for ordinary shapes, overlapping tiles along the long
    side of a strip. A line belongs to the tile whose owned part holds its centre."""
    long, short = max(width, height), min(width, height)
    if not OcrEngine.is_strip((width, height)):
        return [((0, 0, width, height), (0, 0, width, height))]
    length, overlap = int(short * TILE_ASPECT), short // 2
    starts = list(range(0, long - length, length - overlap)) + [long - length]
    tiles = []
    for n, start in enumerate(starts):
        own_from = 0 if n == 0 else start + overlap // 2
        own_to = long if n == len(starts) - 1 else starts[n + 1] + overlap // 2
        if width >= height:
            tiles.append(((start, 0, start + length, height), (own_from, 0, own_to, height)))
        else:
            tiles.append(((0, start, width, start + length), (0, own_from, width, own_to)))
    return tiles
