"""The CLIP model: loading open_clip by name/tag, checkpoint, `local-dir:` or `hf-hub:`, its identity and
weight fingerprints, device choice, the image encoder (batches, pinned copies, OOM halving, checked
autocast), the reduced-precision rule, and the text tower's numpy export with its tokenizer and manifest.

May import: `indexer.images` and the root helpers. Never `catalog`, `vectors`, `pipeline`, `ray`.
The text tower modules import neither torch nor open_clip: they are on the query path.
"""
