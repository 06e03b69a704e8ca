"""Text in pictures (OCR): the engine that reads the lines of an upright image (RapidOCR's ONNX PP-OCR models,
shipped inside its wheel: nothing is downloaded at run time), and the normal form of that text which the word
index stores and word queries are matched against.

Runs in OCR worker processes. May import: `indexer.images` and the root helpers. No catalog, no torch.
"""
