"""OCR's gate: does a picture hold text at all? The detector's probability map on a copy reduced to GATE_SIDE,
asked whether GATE_PIXELS of it pass GATE_PROB. Most photos hold none, and this is all they cost.

It runs in the decode workers on the image the decode made for the model, so it loads the detector with
onnxruntime alone (no OpenCV, no recogniser: ~0.1 s) and resizes with Pillow.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

# Measured on 219 renders at 640x480 (2 cores, 1 thread; docs/ocr.md): 15.9 ms at 320 px (94 ms at 640); it
# opens for 17 of 19 pictures of 16 px English words, all of 24 px and more, all Chinese ones, and 1 of 35
# pictures without text. Sides rounded down to 32 and a bicubic resize: as sensitive as OpenCV's resize with
# sides rounded to the nearest 32 (18.2 ms), where rounding down with a bilinear one lost 3 more.
GATE_SIDE = 320
GATE_PROB = 0.3
GATE_PIXELS = 3
DETECTOR = "ch_PP-OCRv4_det_infer.onnx"  # in the rapidocr_onnxruntime wheel's models/


def detector_path() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    assert spec is not None and spec.submodule_search_locations, "the ocr extra is checked before"
    return Path(next(iter(spec.submodule_search_locations))) / "models" / DETECTOR


def detector_session(threads: int = 1) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(str(detector_path()), options, providers=["CPUExecutionProvider"])


class TextGate:
    """`session`: an onnxruntime session of the detector (the full engine's own), else one is loaded."""

    def __init__(self, session: Any = None, threads: int = 1):
        self._session = session if session is not None else detector_session(threads)
        self._input = self._session.get_inputs()[0].name

    def has_text(self, image: "Image.Image") -> bool:
        from PIL import Image as PILImage

        width, height = image.size
        ratio = min(1.0, GATE_SIDE / max(width, height))
        # The network takes sides in multiples of 32 (rounded down: a 4:3 picture is 320x224, not 320x256).
        size = (max(32, int(width * ratio) // 32 * 32), max(32, int(height * ratio) // 32 * 32))
        small = (image if image.mode == "RGB" else image.convert("RGB")).resize(size, PILImage.Resampling.BICUBIC)
        # BGR, as the detector was trained (OpenCV's order), each channel to [-1, 1]
        pixels = np.asarray(small, np.float32)[:, :, ::-1] * np.float32(2 / 255) - np.float32(1)
        tensor = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])
        probability = self._session.run(None, {self._input: tensor})[0]
        return int((probability > GATE_PROB).sum()) >= GATE_PIXELS
