"""Where a library keeps its files, and which library a command uses when none is named."""
from __future__ import annotations

import os
import sys
from pathlib import Path

CATALOG_FILE = "catalog.sqlite"
INDEX_FILE = "vectors.faiss"
LOCK_FILE = "write.lock"
TEXT_TOWER_DIR = "text_tower"
TEXT_TOWER_SKIPPED = "text_tower.skipped"  # why this library's model has no numpy export (queries use torch)
LIBRARY_ENV = "SEARCHENGINE_LIBRARY"


def default_library_dir() -> Path:
    """$SEARCHENGINE_LIBRARY, else the per-user data folder."""
    if os.environ.get(LIBRARY_ENV):
        return Path(os.environ[LIBRARY_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "searchengine"
