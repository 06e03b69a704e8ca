"""The on-disk IVF kind: built in shards and merged, searched from the mapped lists, changed through its delta,
saved and reloaded, refused when damaged, and chosen by size through the index store (thresholds made small)."""
from __future__ import annotations

import os


import numpy as np
import pytest

import indexer.vectors.store as index_store
import indexer.vectors.ondisk_ivf as ondisk_index
import indexer.vectors.index as vector_index
from indexer.catalog.store import BatchWrite, Catalog, StoredImage
from indexer.errors import IndexFileError
from indexer.vectors.store import IndexStore
from indexer.vectors.index import IVF_ONDISK, VectorIndex

DIM = 16


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _data(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM))
    return _unit(centres[rng.integers(0, 40, n)] + 0.3 * rng.standard_normal((n, DIM)))


def _exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :k]]


@pytest.fixture
def built(tmp_path, monkeypatch) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    monkeypatch.setattr(ondisk_index, "SHARD_VECTORS", 1000)  # 3 shards, merged
    vectors, ids = _data(2500), np.arange(100, 2600)
    index = VectorIndex.build(DIM, ids, vectors, seq=7, kind=IVF_ONDISK, folder=tmp_path)
    index.nprobe = index.nlist  # every cell: results are exact up to the 8-bit codes
    return index, ids, vectors


def test_search_matches_exact_and_reads_lists_from_disk(built, tmp_path):
    index, ids, vectors = built
    assert (index.kind, index.ntotal) == (IVF_ONDISK, len(ids))
    assert len(list(tmp_path.glob("ondisk-*.ivf.ivfdata"))) == 1
    assert not list(tmp_path.glob("*.shard*")), "shard files are removed after the merge"
    queries = _data(30, seed=1)
    _, found = index.search(queries, 10, rerank=lambda wanted: vectors[wanted - 100])
    exact = _exact(vectors, ids, queries, 10)
    assert np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]) >= 0.98


def test_changes_go_through_the_delta_and_survive_save_and_load(built, tmp_path):
    index, ids, vectors = built
    gone = ids[:50]
    assert index.remove(gone) == 50
    assert index.remove(gone) == 0
    fresh = _data(20, seed=2)
    index.add(np.arange(5000, 5020), fresh)
    assert index.ntotal == len(ids) - 50 + 20
    _, found = index.search(vectors[:50], 5)
    assert not set(found.ravel()) & set(gone.tolist())
    _, found = index.search(fresh, 1)
    assert found[:, 0].tolist() == list(range(5000, 5020))

    index.save(tmp_path / "vectors.faiss")
    loaded = VectorIndex.load(tmp_path / "vectors.faiss")
    assert (loaded.kind, loaded.ntotal, loaded.seq, loaded.nprobe) == (IVF_ONDISK, index.ntotal, 7, index.nprobe)
    for queries in (vectors[:50], fresh, _data(10, seed=3)):
        assert np.array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])


def test_a_new_base_replaces_the_old_files_on_save(built, tmp_path):
    index, ids, vectors = built
    index.save(tmp_path / "vectors.faiss")
    old = {p.name for p in tmp_path.glob("ondisk-*")}
    VectorIndex.build(DIM, ids, vectors, kind=IVF_ONDISK, folder=tmp_path).save(tmp_path / "vectors.faiss")
    now = {p.name for p in tmp_path.glob("ondisk-*")}
    assert now and not now & old
    with pytest.raises(IndexFileError, match="replaced"):
        index.save(tmp_path / "vectors.faiss")  # a stale process never saves over the newer base


@pytest.mark.parametrize("damage", ["truncated", "sampled block", "id list"])
def test_damaged_on_disk_files_are_refused(built, tmp_path, damage):
    index, _, _ = built
    index.save(tmp_path / "vectors.faiss")
    lists = next(tmp_path.glob("ondisk-*.ivfdata"))
    if damage == "truncated":
        with open(lists, "r+b") as fh:
            fh.truncate(lists.stat().st_size - 100)
    elif damage == "sampled block":
        with open(lists, "r+b") as fh:
            fh.seek(10)
            byte = fh.read(1)
            fh.seek(10)
            fh.write(bytes([byte[0] ^ 0xFF]))
    else:
        next(tmp_path.glob("ondisk-*.ids.npy")).unlink()
    with pytest.raises(IndexFileError):
        VectorIndex.load(tmp_path / "vectors.faiss")


def test_the_store_chooses_on_disk_by_size_and_catches_up(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_index, "ONDISK_THRESHOLD", 1500)
    monkeypatch.setattr(index_store, "ONDISK_THRESHOLD", 1500)
    monkeypatch.setattr(vector_index, "ANN_THRESHOLD", 300)
    catalog = Catalog.create(tmp_path / "catalog.sqlite", {"model": "m", "pretrained": "", "dim": str(DIM)})
    vectors = _data(2400)
    for start in range(0, 2400, 800):
        catalog.apply(BatchWrite(stored=[StoredImage(f"/p/{n}.jpg".encode(), 1, 1, n.to_bytes(16, "little"),
                                                     vectors[n]) for n in range(start, start + 800)]))
    notices: list[str] = []
    store = IndexStore(catalog, tmp_path / "vectors.faiss", DIM, notices.append)
    store.start_run()
    store.finish()
    assert store.index.kind == IVF_ONDISK
    extra = _data(5, seed=9)
    catalog.apply(BatchWrite(stored=[StoredImage(f"/q/{n}.jpg".encode(), 1, 1, b"x" * 16, extra[n])
                                     for n in range(5)]))
    reader = IndexStore(Catalog.open(tmp_path / "catalog.sqlite", writable=False), tmp_path / "vectors.faiss",
                        DIM, notices.append)
    index = reader.for_query()
    assert (index.kind, index.ntotal) == (IVF_ONDISK, 2405)
    index.nprobe = index.nlist
    _, found = index.search(extra, 1)
    assert set(found[:, 0].tolist()) == set(range(2401, 2406))
    # Damaged as a new file under the same name: truncating the inode the reader above still maps would
    # SIGBUS this process on its next touch of those pages (a crash of the test, not of what it checks).
    data = next(tmp_path.glob("ondisk-*.ivfdata"))
    data.with_suffix(".tmp").write_bytes(b"damaged")
    os.replace(data.with_suffix(".tmp"), data)
    writer = IndexStore(catalog, tmp_path / "vectors.faiss", DIM, notices.append)
    writer.start_run()
    writer.finish()
    assert (writer.index.kind, writer.index.ntotal) == (IVF_ONDISK, 2405)
    assert any("rebuilt" in n for n in notices), notices
    assert VectorIndex.load(tmp_path / "vectors.faiss").ntotal == 2405
