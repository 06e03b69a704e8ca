"""Indexing on Ray: the session (local or a cluster address), the watchdog that ends a local Ray when the
driver dies, the filter for Ray's own stderr noise, and the Ray Data pipeline that reuses the local
pipeline's plan, preparer and batch writer.

May import: `indexer.pipeline`, `indexer.catalog`, `indexer.model`, `indexer.images` and the root helpers.
"""
