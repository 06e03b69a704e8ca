"""The whole life of a library on the approximate (IVF) index, with the threshold lowered so 240 photos
reach it: creation, queries through the exact re-rank, additions, removals and renames seen by a reader and
by the writer, retraining on growth at the end of a run, a damaged or stale index file, and --limit."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import indexer.vectors.index as vector_index
from helpers.catalog import raw_sqlite
from helpers.cli import run
from helpers.faults import copy_tree
from helpers.images import make_photos
from indexer.vectors.index import IVF_SQ8, VectorIndex
from searchengine.library.api import Library

PHOTOS = 240
TRAIN = vector_index._trained_ivf_sq8
# 240 vectors make 6 cells; 3 are probed. One probed cell finds only ~80% of the true top 10 here, so the
# tests below see an index where probing matters, not a flat index in disguise.
SETTINGS = {"ANN_THRESHOLD": 100, "MIN_NPROBE": 3, "SCAN_VECTORS": 40}


@pytest.fixture(autouse=True)
def ivf_settings(monkeypatch):
    for name, value in SETTINGS.items():
        monkeypatch.setattr(vector_index, name, value)


def _move_paths(library: Path, old: bytes, new: bytes) -> None:
    """Point a copied catalog at the copied photos (paths are stored absolute)."""
    with raw_sqlite(library) as conn:
        for image_id, path, folder in conn.execute("SELECT id, path, folder FROM images").fetchall():
            conn.execute("UPDATE images SET path=?, folder=? WHERE id=?",
                         (new + path[len(old):], new + folder[len(old):], image_id))


def index(*args: object) -> dict:
    return json.loads(run("index", *args, "--workers", "0", "--json").stdout)


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_model_name) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ivf")
    make_photos(root / "photos", PHOTOS)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SETTINGS.items():
            patch.setattr(vector_index, name, value)
        summary = index(root / "photos", "--library", root / "library", "--model", tiny_model_name)
    assert summary["added"] == PHOTOS
    return root / "library", root / "photos"


@pytest.fixture
def library(template, isolated) -> tuple[Library, Path]:
    folder, photos = template
    copy_tree(folder, isolated / "library")
    copy_tree(photos, isolated / "photos")
    _move_paths(isolated / "library", os.fsencode(photos), os.fsencode(isolated / "photos"))
    notices: list[str] = []
    lib = Library.open(isolated / "library", notice=notices.append)
    lib.notices = notices
    yield lib, isolated / "photos"
    lib.close()


@pytest.fixture
def no_training(monkeypatch):
    """Queries must never train an index: make training fail loudly while this fixture is active."""
    def refuse(*_args):
        raise AssertionError("a query trained an IVF index")

    monkeypatch.setattr(vector_index, "_trained_ivf_sq8", refuse)


def ids(hits) -> list[int]:
    return [h.id for h in hits]


def stored(lib: Library, image_ids: list[int]) -> np.ndarray:
    return lib._readable_catalog().vectors_for(np.array(image_ids), 32)


def test_a_large_library_is_built_on_ivf_and_probing_matters(library):
    lib, photos = library
    assert lib.status().index == IVF_SQ8
    index = lib._readable_index()
    assert index.kind == IVF_SQ8 and 1 < index.nprobe < index.nlist, (index.nprobe, index.nlist)
    queries = sorted(photos.rglob("*.png"))[:40]
    exact = [ids(lib.search(image=str(p), limit=10, exact=True)) for p in queries]
    recall = [len(set(ids(lib.search(image=str(p), limit=10))) & set(e)) / 10 for p, e in zip(queries, exact)]
    assert np.mean(recall) == 1.0  # the easy query set: the product's probing finds the exact top 10
    index.nprobe = 1
    one_cell = [len(set(ids(lib.search(image=str(p), limit=10))) & set(e)) / 10 for p, e in zip(queries, exact)]
    assert np.mean(one_cell) < 0.95  # ...which one probed cell does not


def test_ivf_scores_are_exact_after_the_re_rank(library):
    lib, photos = library
    query = lib._query_encoder().texts(["a photo of a dog"])[0]
    for hits in (lib.search(text="a photo of a dog", limit=15), lib.search(image=str(photos / "p010.png"), limit=15)):
        assert len(hits) == 15
        scores = np.array([h.score for h in hits])
        assert np.all(np.diff(scores) <= 1e-6)
    hits = lib.search(text="a photo of a dog", limit=15)
    np.testing.assert_allclose([h.score for h in hits], stored(lib, ids(hits)) @ query, atol=1e-5)


@pytest.mark.parametrize("limit", [PHOTOS - 1, PHOTOS, 10 * PHOTOS])
def test_limit_near_the_library_size_is_honoured(library, limit):
    lib, _ = library
    for exact in (False, True):
        hits = lib.search(text="a photo", limit=limit, exact=exact)
        assert len(hits) == min(limit, PHOTOS) and len(set(ids(hits))) == len(hits)


def test_a_reader_catches_up_with_additions_removals_and_renames(library, isolated, no_training, monkeypatch):
    lib, photos = library
    lib.search(text="a photo")  # the reader has the index in memory now
    gone = sorted(photos.rglob("*.png"))[:3]
    renamed = {p: p.with_name(f"renamed-{p.name}") for p in sorted(photos.rglob("*.png"))[3:6]}
    for path in gone:
        path.unlink()
    for old, new in renamed.items():
        old.rename(new)
    added = make_photos(isolated / "more", 12, first_seed=5000)
    with monkeypatch.context() as writer:
        writer.setattr(vector_index, "_trained_ivf_sq8", TRAIN)  # a writer may train
        summary = index(photos, isolated / "more")
    assert (summary["added"], summary["removed"], summary["moved"], summary["encoded"]) == (15, 6, 3, 12)
    every = lib.search(text="a photo", limit=1000)
    listed = {h.path for h in every}
    assert len(every) == PHOTOS - 3 + 12 == len(listed)
    assert not listed & ({str(p) for p in gone} | {str(p) for p in renamed})
    assert {str(p) for p in renamed.values()} | {str(p) for p in added} <= listed
    for path in added[:4] + list(renamed.values()):
        assert lib.search(image=str(path), limit=1)[0].path == str(path)
    assert not any("rebuilding" in n for n in lib.notices), lib.notices


def test_retraining_on_growth_happens_once_at_the_end_of_the_run(library, isolated, monkeypatch):
    lib, photos = library
    monkeypatch.setattr(vector_index, "RETRAIN_GROWTH", 1.1)
    trained_at: list[int] = []
    train = vector_index._trained_ivf_sq8

    def recording(vectors):
        trained_at.append(len(vectors))
        return train(vectors)

    monkeypatch.setattr(vector_index, "_trained_ivf_sq8", recording)
    make_photos(isolated / "more", 40, first_seed=6000)
    run("index", photos, isolated / "more", "--workers", "0", "--batch-size", "4")
    assert trained_at == [PHOTOS + 40]
    saved = VectorIndex.load(isolated / "library" / "vectors.faiss")
    assert (saved.kind, saved.built_for, saved.ntotal) == (IVF_SQ8, PHOTOS + 40, PHOTOS + 40)


def test_a_damaged_index_is_answered_exactly_until_repair(library, isolated, no_training, monkeypatch):
    lib, photos = library
    expected = [lib.search(image=str(photos / "p007.png"), limit=10, exact=True),
                lib.search(text="a photo", limit=10, exact=True)]
    lib.close()
    index_file = isolated / "library" / "vectors.faiss"
    damaged = index_file.read_bytes()[:-50]
    index_file.write_bytes(damaged)
    result = run("search", "--image", photos / "p007.png", "--json", "--limit", "10")
    assert [h["path"] for h in json.loads(result.stdout)] == [h.path for h in expected[0]]
    assert "searchengine repair" in result.stderr and "exact search" in result.stderr
    assert index_file.read_bytes() == damaged  # a query does not rebuild a large index
    lib2 = Library.open(isolated / "library", notice=lambda _: None)
    assert [h.path for h in lib2.search(text="a photo", limit=10)] == [h.path for h in expected[1]]
    lib2.close()
    monkeypatch.setattr(vector_index, "_trained_ivf_sq8", TRAIN)  # a writer may train
    repaired = json.loads(run("repair", "--json").stdout)
    assert (repaired["images"], repaired["index"]) == (PHOTOS, IVF_SQ8)
    assert VectorIndex.load(index_file).ntotal == PHOTOS
    again = run("search", "--image", photos / "p007.png", "--json", "--limit", "10")
    assert not again.stderr and json.loads(again.stdout) == json.loads(result.stdout)


def test_a_stale_index_file_is_caught_up_in_memory(library, isolated, no_training, monkeypatch):
    lib, photos = library
    lib.close()
    index_file = isolated / "library" / "vectors.faiss"
    older = index_file.read_bytes()
    added = make_photos(isolated / "more", 8, first_seed=7000)
    with monkeypatch.context() as writer:
        writer.setattr(vector_index, "_trained_ivf_sq8", TRAIN)  # a writer may train
        index(isolated / "more")
    index_file.write_bytes(older)
    result = run("search", "--image", added[0], "--json", "--limit", "3")
    assert json.loads(result.stdout)[0]["path"] == str(added[0])
    assert "catching up" in result.stderr and "rebuilding" not in result.stderr
    shutil.rmtree(isolated / "more")


def test_readers_trust_the_index_file_its_writer_recorded(library, isolated, no_training):
    """An index run records the file's signature in the catalog; a reader then skips the whole-file checksum and
    answers exactly as a reader that verified it. A copied library (new inodes) is verified whole again."""
    from indexer.vectors.file import signature_of
    from indexer.vectors.store import FILE_SIGNATURE

    lib, photos = library
    before = lib._readable_index()
    assert before.verified is True  # the fixture's copy: not the file its writer recorded
    expected = [ids(lib.search(text="a photo of a dog", limit=10)), ids(lib.search(image=str(photos / "p003.png")))]
    lib.close()
    index(photos)  # nothing new: the writer verifies the file whole and records it
    lib2 = Library.open(isolated / "library", notice=lambda _: None)
    assert lib2._readable_catalog().meta()[FILE_SIGNATURE] == signature_of(isolated / "library" / "vectors.faiss")
    trusted = lib2._readable_index()
    assert trusted.verified is False and trusted.kind == IVF_SQ8
    assert [ids(lib2.search(text="a photo of a dog", limit=10)),
            ids(lib2.search(image=str(photos / "p003.png")))] == expected
    lib2.close()
