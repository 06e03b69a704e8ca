"""What a library's model is beyond its name: a fingerprint of weights that live in files, and its preprocessing.

A `local-dir:` folder or a checkpoint file is named by its path, and a path can come to hold other weights.
At creation the catalog records a BLAKE2b fingerprint of those files (the folder's open_clip_config.json,
which carries the preprocessing, and every weights file in it) and the preprocessing config open_clip gives.
A later load that finds different ones is refused like any model mismatch. Pretrained tags and hf-hub repos
are identified by their name, as before. A library made before fingerprints gets them on its next index run.

Hashing costs about a second per GB (more on a busy machine), so the catalog also keeps the files' stat
signature (inode, size, mtime and ctime, which no copy or write can leave as they were) with the fingerprint:
files whose signature is unchanged are not hashed again, as unchanged photos are not re-read.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.errors import ModelMismatchError

if TYPE_CHECKING:
    from indexer.images.decode import PreprocessConfig
    from indexer.model.clip import ModelSpec

FINGERPRINT_KEY = "weights_fingerprint"
PREPROCESS_KEY = "preprocess"
STAT_KEY = "weights_stat"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pth")
LOCAL_DIR = "local-dir:"


def weight_files(spec: "ModelSpec") -> list[Path]:
    """The files whose bytes are the model: a local-dir's config and weights, or a checkpoint file; else none."""
    if spec.name.startswith(LOCAL_DIR):
        folder = Path(spec.name[len(LOCAL_DIR):])
        weights = sorted({p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)})
        return [folder / "open_clip_config.json", *weights]
    if spec.pretrained and os.path.isabs(spec.pretrained):
        return [Path(spec.pretrained)]
    return []


def weights_fingerprint(spec: "ModelSpec") -> str | None:
    """"blake2b:HEX" over the names, sizes and bytes of the model's files; None for a model named by tag."""
    files = weight_files(spec)
    if not files:
        return None
    digest = hashlib.blake2b(digest_size=20)
    for path in files:
        try:
            with open(path, "rb") as stream:
                digest.update(f"{path.name}\0{os.fstat(stream.fileno()).st_size}\0".encode())
                while chunk := stream.read(1 << 22):
                    digest.update(chunk)
        except OSError:
            digest.update(f"{path.name}\0missing\0".encode())
    return "blake2b:" + digest.hexdigest()


def stat_signature(files: list[Path]) -> str:
    """Inode, size, mtime and ctime of each file: what any replacement or write of its bytes changes."""
    rows = []
    for path in files:
        try:
            info = os.stat(path)
            rows.append([path.name, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns])
        except OSError:
            rows.append([path.name, None])
    return json.dumps(rows)


def weights_meta(spec: "ModelSpec") -> dict[str, str]:
    """Fingerprint and stat signature to record for `spec` (empty for a model named by tag)."""
    files = weight_files(spec)
    if not files:
        return {}
    signature = stat_signature(files)  # before hashing: a change during the hash shows as a changed signature
    return {FINGERPRINT_KEY: weights_fingerprint(spec) or "", STAT_KEY: signature}


def verify_weights(meta: dict[str, str], spec: "ModelSpec", library: str) -> dict[str, str]:
    """Refuse weights other than the recorded ones; the entries worth (re)recording, if any.

    Files with the recorded stat signature are not hashed again."""
    files = weight_files(spec)
    if not files or (FINGERPRINT_KEY in meta and meta.get(STAT_KEY) == stat_signature(files)):
        return {}
    found = weights_meta(spec)
    check_fingerprint(meta, spec, found[FINGERPRINT_KEY], library)
    return {k: v for k, v in found.items() if meta.get(k) != v}


def preprocess_text(cfg: "PreprocessConfig") -> str:
    return json.dumps(asdict(cfg), sort_keys=True)


def preprocess_meta(cfg: "PreprocessConfig") -> dict[str, str]:
    return {PREPROCESS_KEY: preprocess_text(cfg)}


def check_fingerprint(meta: dict[str, str], spec: "ModelSpec", fingerprint: str | None, library: str) -> None:
    """Refuse weights that are not the ones the library was built with (nothing recorded: nothing to refuse)."""
    recorded = meta.get(FINGERPRINT_KEY)
    if recorded and fingerprint and recorded != fingerprint:
        raise ModelMismatchError(
            f"library {library} was built with {spec.describe()} weights {_short(recorded)}, but those files now hold "
            f"{_short(fingerprint)}: other weights would mix two models' embeddings; restore the weights, "
            "or use another --library for the new ones")


def check_preprocess(meta: dict[str, str], spec: "ModelSpec", cfg: "PreprocessConfig", library: str) -> None:
    recorded = meta.get(PREPROCESS_KEY)
    if recorded and recorded != preprocess_text(cfg):
        raise ModelMismatchError(
            f"library {library} was built with {spec.describe()} preprocessing {recorded}, but it now loads as "
            f"{preprocess_text(cfg)}; restore the model's config, or use another --library")


def _short(fingerprint: str) -> str:
    return fingerprint[:20]
