"""The SQLite catalog, the library's source of truth (embeddings included): schema and named migrations,
the `Catalog` store, reads (stdlib sqlite3, read-only, for queries), writes (SQLAlchemy, one transaction a
batch), bulk paths, metadata columns and filter reads, moves/claims, exchange rows. All SQL lives here.

May import: `indexer.images` (the metadata record) and the root helpers. Never `vectors`, `model`,
`pipeline`, `ray`, `exchange`.
"""
