"""What the tests share, importable as `helpers.*` (setup.cfg puts tests/ on the path: `pythonpath = tests`).

    images      photo folders: every format, odd and bad files, small numbered photos, HEIC and AVIF bytes
    cli         the CLI: in this process (`run`), or as a separate process where a test needs one (`cli`, `start`)
    catalog     reading a library's catalog as the product opens it; the raw SQLite file for tests that damage it
    checks      what a whole library must answer (every file once, the right first hit)
    faults      killing index runs at chosen moments and checking what they leave
    model       the tiny random-weight model, rewritten with other weights
    server      the web app: a small indexed library, an in-process client, a real server process
    synthetic   libraries of planted embeddings (no model, no decode)
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
