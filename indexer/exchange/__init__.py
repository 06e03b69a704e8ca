"""Embeddings in and out of a library: Parquet export with the model's identity, import of our own export
and of clip-retrieval's `img_emb` + `metadata` layout.

May import: `indexer.catalog`, `indexer.model`, `indexer.images` and the root helpers.
"""
