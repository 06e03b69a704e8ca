"""The vector index derived from the catalog: the FAISS kinds (flat, IVF-SQ8, on-disk IVF with a delta),
the index file format, and the store that loads, catches up, rebuilds and saves it.

May import: `indexer.catalog` and the root helpers. Never `model`, `pipeline`, `ray`, `exchange`.
"""
