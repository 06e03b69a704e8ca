"""Videos as files: reading them with PyAV (FFmpeg) — probing (duration, codec, displayed size, rotation,
container metadata), sampling frames at chosen times by keyframe seek, and cutting the samples into segments
(scene cuts and embedding changes); plus a cheap content identity that does not read a multi-GB file whole.

Runs in decode worker processes. May import: `indexer.images` and the root helpers (`indexer.errors`,
`indexer.durable`, `indexer.cpu`). Nothing else of `indexer` (no catalog, pipeline), no torch, no SQLAlchemy.
"""
