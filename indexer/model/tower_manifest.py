"""The text tower export's manifest: written last at export time, it says what a usable export holds.

It lists every file with its size and records the export's verification (lowest cosine to open_clip's
`encode_text`) and one probe text with its embedding as the verified export computed it. A reader checks the files
cheaply (sizes, no reads) and evaluates the probe beside its own texts: a damaged weight shows up as a probe
mismatch. The manifest also records each file's stat signature (inode, size, mtime, ctime) and numpy's version:
while every file still has its signature (any write moves a file's ctime; a copy is a new inode) under the same
numpy, the files are the bytes the export verified and the probe is skipped (~7 ms of a new process's query).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.durable import stat_key
from indexer.model.numpy_text import NumpyTextEncoder

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "searchengine-text-tower-manifest"
MANIFEST_VERSION = 1
PROBE_TEXT = "a photo"  # short: evaluated beside every query, it must not lengthen the token window
PROBE_MIN_COSINE = 0.9999  # the probe is evaluated by the same numpy code that passed verification


@dataclass(frozen=True)
class Manifest:
    files: dict[str, int]
    min_cosine: float
    probe_text: str
    probe_embedding: np.ndarray
    unchanged: bool = False  # every file has the signature recorded at export, under the same numpy


def write_manifest(folder: Path, min_cosine: float, probe_embedding: np.ndarray) -> None:
    """Record every file of folder with its size, the verification result and the probe (call it last)."""
    folder = Path(folder)
    stats = {p.name: p.stat() for p in sorted(folder.iterdir()) if p.name != MANIFEST_FILE}
    body = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": {n: st.st_size for n, st in stats.items()},
            "min_cosine": min_cosine, "probe_text": PROBE_TEXT,
            "probe_embedding": [float(x) for x in np.asarray(probe_embedding).ravel()],
            "signatures": {n: stat_key(st) for n, st in stats.items()}, "numpy": np.__version__}
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(body))
    os.replace(tmp, folder / MANIFEST_FILE)


def read_manifest(folder: Path) -> tuple[Manifest | None, str | None]:
    """(manifest, None) if every file it lists is there with its size, else (None, why not)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, f"no text tower export in {folder}"
    try:
        raw = json.loads((folder / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        return None, f"{folder} has no {MANIFEST_FILE} (an older or unfinished export)"
    except (OSError, ValueError) as exc:
        return None, f"{folder / MANIFEST_FILE} is unreadable ({exc})"
    try:
        if raw["format"] != MANIFEST_FORMAT or raw["version"] != MANIFEST_VERSION:
            return None, f"{folder / MANIFEST_FILE} is of an unknown format"
        manifest = Manifest({str(k): int(v) for k, v in raw["files"].items()}, float(raw["min_cosine"]),
                            str(raw["probe_text"]), np.asarray(raw["probe_embedding"], dtype=np.float32))
        signatures = raw.get("signatures") if raw.get("numpy") == np.__version__ else None
        signatures = {str(k): str(v) for k, v in signatures.items()} if isinstance(signatures, dict) else {}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, f"{folder / MANIFEST_FILE} is malformed"
    reason, unchanged = _files_reason(folder, manifest.files, signatures)
    return (replace(manifest, unchanged=unchanged), None) if reason is None else (None, reason)


def _files_reason(folder: Path, files: dict[str, int], signatures: dict[str, str]) -> tuple[str | None, bool]:
    """(why the files are not as listed, or None; whether each has its recorded signature)."""
    unchanged = set(signatures) == set(files)
    for name, size in files.items():
        try:
            st = os.stat(folder / name)
        except OSError:
            return f"{folder / name} is missing", False
        if st.st_size != size:
            return f"{folder / name} has {st.st_size} bytes, not {size}", False
        unchanged = unchanged and signatures[name] == stat_key(st)
    return None, unchanged


def probe_reason(manifest: Manifest, embedding: np.ndarray) -> str | None:
    """Why the probe's fresh embedding disagrees with the recorded one, or None."""
    expected = manifest.probe_embedding
    if embedding.shape != expected.shape or not np.all(np.isfinite(embedding)):
        return "its probe embedding is not finite or of the wrong size"
    cosine = float(np.dot(embedding, expected))
    if not cosine >= PROBE_MIN_COSINE:
        return f"its probe embedding differs from the one recorded at export (cosine {cosine:.6f}): damaged weights"
    return None


def prefetch(folder: Path, skip: Sequence[str] = ("token_embedding.npy",)) -> None:
    """Ask the kernel to read the export's weights in the background (a cold page cache costs most there).

    The token embedding is skipped: a query reads only a few of its rows.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.endswith(".npy") and entry.name not in skip:
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            finally:
                os.close(fd)


def load_text_tower(folder: Path) -> tuple[NumpyTextEncoder | None, Manifest | None, str | None]:
    """(encoder, manifest, None) for a complete export, else (None, None, why it cannot be used)."""
    manifest, reason = read_manifest(folder)
    if manifest is None:
        return None, None, reason
    encoder = NumpyTextEncoder.load(folder)
    if encoder is None:
        return None, None, f"{folder}'s weights do not match its meta.json"
    if encoder.dim != manifest.probe_embedding.shape[0]:
        return None, None, f"{folder / MANIFEST_FILE} is for another model"
    return encoder, manifest, None


def encode_checked(encoder: NumpyTextEncoder, manifest: Manifest,
                   texts: Sequence[str]) -> tuple[np.ndarray | None, str | None]:
    """(embeddings, None) with the probe evaluated beside `texts` and found as recorded, else (None, why)."""
    rows = encoder.encode([*texts, manifest.probe_text])
    reason = probe_reason(manifest, rows[-1])
    if reason is None and not np.all(np.isfinite(rows)):
        reason = "it gave non-finite embeddings"
    return (rows[:-1], None) if reason is None else (None, reason)


def outdated(folder: Path) -> bool:
    """Whether a usable export predates what makes a new process's first query cheap: the files' stat signatures
    (no probe) and the tokenizer's rank table (no 49k-entry dict). The next index run re-exports it once."""
    from indexer.model.tokenizer import RANKS_FILE

    manifest, _ = read_manifest(folder)
    return manifest is not None and not (manifest.unchanged and (Path(folder) / RANKS_FILE).exists())


def export_reason(folder: Path) -> str | None:
    """Why the export in folder cannot answer text queries, or None if it can (reads every weight once, unless
    every file is as the export verified it: then queries skip the probe, and so does this)."""
    encoder, manifest, reason = load_text_tower(folder)
    if encoder is None or manifest is None:
        return reason
    if manifest.unchanged:
        return None
    return encode_checked(encoder, manifest, [])[1]
