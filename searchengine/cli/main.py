"""The `searchengine` command: parse, call the Library, format; domain errors become one-line messages."""
from __future__ import annotations

from searchengine.cli import index, search  # noqa: F401  (each registers its commands on `main`)
from searchengine.cli.base import entry, escape_path, main

__all__ = ["entry", "escape_path", "main"]

if __name__ == "__main__":
    entry()
