"""Images as files: decoding (orientation, reduced-size JPEG decode, bomb guard), reading photo metadata
(EXIF dates, camera, GPS) and making thumbnails.

May import: the root helpers (`indexer.errors`, `indexer.durable`, `indexer.cpu`). Nothing else of `indexer`.
"""
