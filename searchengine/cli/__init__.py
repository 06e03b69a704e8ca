"""The `searchengine` command (click): parse, call the Library, format; domain errors become one-line
messages. `main.py` assembles the commands; `base.py` holds the group and shared options.

May import: `searchengine.library`, `searchengine.query`, `searchengine.server` (for `serve`) and `indexer`.
"""
