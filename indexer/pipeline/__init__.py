"""The local index pipeline: scan the roots, plan against the catalog, prepare files in decode workers,
encode batches, commit them (the batch writer that the Ray path shares), fill missing metadata, check int8,
record the run's meta.

May import: `indexer.catalog`, `indexer.model`, `indexer.images` and the root helpers. Never `ray`,
`exchange`, `vectors`.
"""
