"""`searchengine serve`: the local web app and JSON API (a thin FastAPI layer over `Library`).

May import: `searchengine.library`, `searchengine.query`, `indexer`. Never `cli`.
"""
