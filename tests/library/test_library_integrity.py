"""Never drop what is indexed: overlapping roots, removals committed before encoding, files that move,
searches that skip vanished files, honest run times and plain output that survives odd names."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers.catalog import catalog_query
from helpers.cli import run, start
from helpers.images import make_photos


def index(*args: object) -> dict:
    return json.loads(run("index", *args, "--workers", "0", "--batch-size", "4", "--json").stdout)


def rows(library: Path) -> dict[str, int]:
    """path -> id of every indexed image, as committed."""
    return {os.fsdecode(p): i for p, i in catalog_query(library, "SELECT path, id FROM images")}


@pytest.fixture
def photos(isolated, tiny_model_name) -> Path:
    """An indexed folder of 10 photos, 2 of them in sub/."""
    folder = isolated / "photos"
    make_photos(folder, 10)
    assert index(folder, "--model", tiny_model_name)["added"] == 10
    return folder


# --- 1. overlapping roots -------------------------------------------------------------------------------------
@pytest.mark.parametrize("roots", [("", ""), ("", "sub"), ("sub", ""), ("", "link"), ("link", ""),
                                   ("", "p000.png"), ("p000.png", ""), ("p000.png", "p000.png", "")])
def test_overlapping_roots_keep_every_file_once(photos, isolated, roots):
    (isolated / "link").symlink_to(photos)
    before = rows(isolated / "library")
    summary = index(*[photos / r if r != "link" else isolated / "link" for r in roots])
    assert (summary["removed"], summary["added"], summary["encoded"]) == (0, 0, 0), summary
    assert summary["unchanged"] == 10 or roots[0] == "sub" or "p000.png" in roots, summary
    assert rows(isolated / "library") == before


def test_overlapping_roots_on_a_new_library_index_each_file_once(isolated, tiny_model_name):
    folder = isolated / "photos"
    make_photos(folder, 10)
    (isolated / "link").symlink_to(folder)
    summary = index(folder / "p000.png", folder / "sub", isolated / "link", folder, folder / "p000.png",
                    "--model", tiny_model_name)
    assert (summary["added"], summary["encoded"]) == (10, 10), summary
    assert len(rows(isolated / "library")) == 10


def test_overlapping_roots_still_remove_what_is_gone(photos, isolated):
    (photos / "p001.png").unlink()
    (photos / "sub" / "p004.png").unlink()
    summary = index(photos / "sub", photos, photos / "sub")
    assert summary["removed"] == 2
    assert sorted(rows(isolated / "library")) == sorted(str(p) for p in photos.rglob("*.png"))


# --- 2. removals are committed before anything is encoded; a rename is never listed twice -----------------------
def test_removals_commit_before_encoding_and_renames_are_never_listed_twice(photos, isolated, monkeypatch):
    from indexer.catalog.store import Catalog

    library = isolated / "library"
    old_id = rows(library)[str(photos / "p002.png")]
    (photos / "p001.png").unlink()
    (photos / "p002.png").rename(photos / "renamed.png")
    make_photos(isolated / "new", 9, first_seed=3000)
    for path in (isolated / "new").rglob("*.png"):
        path.rename(photos / f"new-{path.name}")
    states: list[tuple[bool, dict[str, int]]] = []
    apply = Catalog.apply

    def recording_apply(self, batch):
        seq = apply(self, batch)
        states.append((bool(batch.stored), rows(library)))
        return seq

    monkeypatch.setattr(Catalog, "apply", recording_apply)
    summary = index(photos)
    assert (summary["removed"], summary["added"], summary["encoded"], summary["moved"]) == (2, 10, 9, 1), summary
    stored = [state for has_stored, state in states if has_stored]
    assert len(stored) >= 3, "the run should commit several batches"
    for state in stored:
        assert str(photos / "p001.png") not in state and str(photos / "p002.png") not in state
    for _, state in states:
        assert not (str(photos / "p002.png") in state and str(photos / "renamed.png") in state)
    assert rows(library)[str(photos / "renamed.png")] == old_id  # the entry followed its file


def test_a_run_killed_after_removals_still_reuses_the_renamed_embedding(photos, isolated, monkeypatch):
    """The removal is committed first; if the run dies then, the next run still claims the old entry."""
    import indexer.pipeline.local

    library = isolated / "library"
    old_id = rows(library)[str(photos / "p003.png")]
    (photos / "p003.png").rename(photos / "elsewhere.png")

    def die(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(indexer.pipeline.local, "run_pipeline", die)
        assert run("index", photos, "--workers", "0", ok=False).exit_code == 130
    assert str(photos / "p003.png") not in rows(library)
    summary = index(photos)
    assert (summary["encoded"], summary["moved"]) == (0, 1), summary
    assert rows(library)[str(photos / "elsewhere.png")] == old_id


# --- 7. moved folders: the entries move; searches never return vanished files ------------------------------------
def test_a_folder_moved_outside_the_roots_moves_its_entries(isolated, tiny_model_name):
    trip = isolated / "photos" / "trip"
    make_photos(trip, 6)
    make_photos(isolated / "photos" / "home", 4, first_seed=2000)
    index(isolated / "photos", "--model", tiny_model_name)
    before = rows(isolated / "library")
    trip.rename(isolated / "photos" / "trip-2024")
    summary = index(isolated / "photos" / "trip-2024")
    assert (summary["added"], summary["encoded"], summary["moved"]) == (6, 0, 6), summary
    after = rows(isolated / "library")
    assert len(after) == 10 and all(os.path.exists(p) for p in after)
    for path, image_id in before.items():
        if "/trip/" in path:
            assert after[path.replace("/trip/", "/trip-2024/")] == image_id
    hits = json.loads(run("search", "--image", isolated / "photos" / "trip-2024" / "p000.png", "--json",
                          "--limit", "20").stdout)
    assert len(hits) == 10 and all(os.path.exists(h["path"]) for h in hits)


def test_a_copy_does_not_steal_the_entry_of_a_file_that_still_exists(photos, isolated):
    before = rows(isolated / "library")
    (photos / "copy.png").write_bytes((photos / "p000.png").read_bytes())
    summary = index(photos)
    assert (summary["added"], summary["encoded"], summary["moved"], summary["reused"]) == (1, 0, 0, 1)
    after = rows(isolated / "library")
    assert after[str(photos / "p000.png")] == before[str(photos / "p000.png")]
    assert after[str(photos / "copy.png")] not in before.values()


def test_search_skips_files_gone_since_indexing_and_still_fills_the_limit(photos, isolated):
    gone = [photos / "p001.png", photos / "p002.png", photos / "sub" / "p004.png"]
    for path in gone:
        path.unlink()
    for args in (("--image", photos / "p000.png"), ("a photo",), ("a photo", "--exact")):
        result = run("search", *args, "--json", "--limit", "7")
        hits = json.loads(result.stdout)
        assert len(hits) == 7 and all(os.path.exists(h["path"]) for h in hits), hits
        assert "skipped" in result.stderr and "searchengine index" in result.stderr
        every = json.loads(run("search", *args, "--json", "--limit", "100").stdout)
        assert sorted(h["path"] for h in every) == sorted(str(p) for p in photos.rglob("*.png"))
    assert len(rows(isolated / "library")) == 10  # a search reports, it does not write


# --- 8. small truths: wall time, odd names in plain output ----------------------------------------------------
def test_index_seconds_is_the_run_wall_time(photos, monkeypatch):
    import indexer.pipeline.plan

    plan = indexer.pipeline.plan.make_plan

    def slow_plan(*args, **kwargs):
        time.sleep(0.4)
        return plan(*args, **kwargs)

    monkeypatch.setattr(indexer.pipeline.plan, "make_plan", slow_plan)
    started = time.monotonic()
    summary = index(photos)
    assert summary["unchanged"] == 10
    assert 0.4 <= summary["seconds"] <= time.monotonic() - started
    assert summary["embed_seconds"] < summary["seconds"]


def test_plain_output_escapes_tabs_and_newlines_and_null_output_is_exact(photos, isolated):
    odd = [photos / "tab\there.png", photos / "new\nline.png", photos / "back\\slash.png"]
    for n, path in enumerate(odd):
        make_photos(isolated / f"odd{n}", 1, first_seed=4000 + n)[0].rename(path)
    index(photos)
    plain = run("search", "a photo", "--limit", "13").stdout_bytes
    lines = plain.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 14
    listed = {line.split(b"\t", 1)[1] for line in lines[:-1]}
    assert {b"tab\\there.png", b"new\\nline.png", b"back\\\\slash.png"} <= {os.path.basename(p) for p in listed}
    null = run("search", "a photo", "--limit", "13", "--null").stdout_bytes
    assert null.endswith(b"\0")
    assert sorted(null[:-1].split(b"\0")) == sorted(os.fsencode(p) for p in photos.rglob("*.png"))


# --- 4. reads by id take any number of ids (SQLite caps one statement at 32,766 parameters) ---------------------
def test_catalog_reads_take_more_ids_than_sqlite_parameters(photos, isolated):
    import numpy as np

    from indexer.catalog.store import Catalog

    catalog = Catalog.open(isolated / "library" / "catalog.sqlite", writable=False)
    try:
        known = sorted(rows(isolated / "library").values())
        wanted = list(range(100_000, 140_000)) + known
        assert sorted(catalog.paths_for(wanted)) == known
        vectors = catalog.vectors_for(np.array(wanted), 32)
        assert vectors.shape == (len(wanted), 32)
        assert np.allclose(np.linalg.norm(vectors[-len(known):], axis=1), 1, atol=1e-5)
        assert not vectors[:40_000].any()
    finally:
        catalog.close()


def test_a_closed_pipe_ends_the_command_quietly(photos):
    with start("search", "a photo", "--limit", "10") as proc:  # its own process: its output pipe is closed
        proc.stdout.close()  # like `| head -0`: the reader is gone before anything is written
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=120)
    assert proc.returncode != 0 and "Error" not in stderr and "Traceback" not in stderr, stderr
