"""The Python API: `Library` (api.py) with its answering half (search.py) and its indexing half
(indexing.py), and where a library keeps its files (layout.py).

May import: `searchengine.query` and all of `indexer`. Never `cli` or `server`.
"""
