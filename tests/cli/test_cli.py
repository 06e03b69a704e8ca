"""End-to-end tests of the command-line contract, run in-process with click's runner and the tiny model."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from helpers.catalog import catalog_meta, catalog_query
from helpers.checks import assert_clear_winner
from helpers.cli import index_json, run
from helpers.images import BAD, GOOD, photo, write_non_utf8

# `photos` (every format, and the bad files) and `indexed` (the same, indexed) are tests/conftest.py's.


def test_index_counts_every_format_and_skips_bad_files(photos, tiny_model_name):
    result = run("index", photos[GOOD[0]].parent, "--model", tiny_model_name, "--json")
    summary = json.loads(result.stdout)
    assert (summary["added"], summary["updated"], summary["removed"], summary["unchanged"], summary["failed"]) == \
        (len(GOOD), 0, 0, 0, len(BAD))
    for name in BAD:
        assert f"{name}:" in result.stderr
    assert "Traceback" not in result.stderr
    status = json.loads(run("status", "--json").stdout)
    assert status["images"] == len(GOOD) and status["failed"] == len(BAD)
    assert status["model"] == tiny_model_name and status["dim"] == 32


def test_unchanged_bad_files_are_not_retried(indexed):
    again = run("index", indexed[GOOD[0]].parent, "--json")
    summary = json.loads(again.stdout)
    assert summary["unchanged"] == len(GOOD) and summary["failed"] == len(BAD) and summary["encoded"] == 0
    assert "skipped" not in again.stderr


def test_text_search_lists_each_indexed_file_once(indexed):
    hits = json.loads(run("search", "a dog running on a beach", "--json", "--limit", "100").stdout)
    paths = [h["path"] for h in hits]
    assert sorted(paths) == sorted(str(p) for p in indexed.values())
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in scores)
    plain = run("search", "a dog", "--limit", "3").stdout.splitlines()
    assert len(plain) == 3 and all(os.path.isabs(line.split("\t", 1)[1]) for line in plain)


def test_image_search_finds_the_indexed_file_first(indexed):
    for name in ("a.jpg", "rotated.jpg", "unicodé 照片.jpg", "sub/deeper/n.png"):
        hits = json.loads(run("search", "--image", indexed[name], "--json", "--limit", "5").stdout)
        assert hits[0]["path"] == str(indexed[name]) and hits[0]["score"] > 0.999


def test_image_search_with_an_outside_file(indexed, isolated):
    outside = isolated / "query.jpg"
    photo(0).save(outside)  # same picture as a.jpg, re-encoded
    hits = json.loads(run("search", "--image", outside, "--json").stdout)
    assert len(hits) == len(GOOD) and hits[0]["path"] == str(indexed["a.jpg"])
    assert_clear_winner(hits)


def test_incremental_add_change_delete(indexed, isolated):
    folder = isolated / "photos"
    photo(1234).save(folder / "new.png")
    photo(4321).save(indexed["c.png"])
    os.utime(indexed["c.png"], ns=(1, 1))
    indexed["f.bmp"].unlink()
    summary = index_json(folder)
    assert (summary["added"], summary["updated"], summary["removed"]) == (1, 1, 1)
    assert summary["unchanged"] == len(GOOD) - 2
    hits = json.loads(run("search", "--image", folder / "new.png", "--json").stdout)
    assert hits[0]["path"] == str(folder / "new.png")
    assert str(indexed["f.bmp"]) not in {h["path"] for h in hits}


def test_rename_and_copy_reuse_embeddings_without_encoding(indexed, isolated):
    folder = isolated / "photos"
    os.rename(indexed["a.jpg"], folder / "renamed.jpg")
    shutil.copy(indexed["c.png"], folder / "copy.png")
    summary = index_json(folder)
    assert (summary["added"], summary["removed"], summary["reused"], summary["encoded"]) == (2, 1, 2, 0)
    status = json.loads(run("status", "--json").stdout)
    assert status["images"] == len(GOOD) + 1


def test_removed_folder_and_exclude(indexed, isolated):
    folder = isolated / "photos"
    shutil.rmtree(folder / "sub")
    summary = index_json(folder, "--exclude", "*.gif")
    assert summary["removed"] == 3  # sub/deeper/n.png, e.gif, animated.gif
    paths = {h["path"] for h in json.loads(run("search", "x", "--json", "--limit", "100").stdout)}
    assert not any(p.endswith(".gif") or "/sub/" in p for p in paths)


def test_non_utf8_file_names(isolated, tiny_model_name):
    folder = isolated / "odd"
    folder.mkdir()
    raw = write_non_utf8(folder)
    index_json(folder, "--model", tiny_model_name)
    hits = json.loads(run("search", "--image", os.fsdecode(raw), "--json").stdout)
    assert os.fsencode(hits[0]["path"]) == raw
    plain = run("search", "x").stdout_bytes
    assert raw in plain


def test_model_guard_refuses_another_model(indexed, tiny_model_dir, isolated):
    other = isolated / "other-model"
    shutil.copytree(tiny_model_dir, other)
    before = (isolated / "library" / "catalog.sqlite").read_bytes()
    result = run("index", isolated / "photos", "--model", f"local-dir:{other}", ok=False)
    assert result.exit_code != 0
    assert str(other) in result.stderr and str(tiny_model_dir) in result.stderr
    assert "Traceback" not in result.stderr
    result = run("index", isolated / "photos", "--pretrained", "openai", ok=False)
    assert result.exit_code != 0 and "openai" in result.stderr
    assert (isolated / "library" / "catalog.sqlite").read_bytes() == before


def test_missing_weights_give_clear_error_and_no_library(photos, isolated):
    result = run("index", isolated / "photos", ok=False)
    assert result.exit_code != 0
    assert "ViT-B-32" in result.stderr and "local-dir:" in result.stderr and "Traceback" not in result.stderr
    assert not (isolated / "library" / "catalog.sqlite").exists()
    empty_dir = isolated / "no-weights"
    empty_dir.mkdir()
    (empty_dir / "open_clip_config.json").write_text("{}")
    result = run("index", isolated / "photos", "--model", f"local-dir:{empty_dir}", ok=False)
    assert result.exit_code != 0 and "no weights" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["search", "x"], "no library"),
    (["status"], "no library"),
    (["search"], "TEXT"),
    (["index", "/nonexistent/folder"], "no such file or folder"),
    (["index", ".", "--model", "NoSuchModel", "--pretrained", "x"], "unknown model"),
    (["search", "x", "--limit", "zero"], "--limit"),
    (["search", "x", "--no-such-option"], "no-such-option"),
    (["nonsense"], "nonsense"),
])
def test_user_errors_are_one_line(args, message, isolated):
    result = run(*args, ok=False)
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_search_errors_on_indexed_library(indexed, isolated):
    result = run("search", "--image", isolated / "missing.jpg", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    (isolated / "bad.jpg").write_text("nope")
    result = run("search", "--image", isolated / "bad.jpg", ok=False)
    assert result.exit_code != 0 and "bad.jpg" in result.stderr


def test_exact_search_agrees_with_index(indexed):
    fast = json.loads(run("search", "a red car", "--json", "--limit", "10").stdout)
    exact = json.loads(run("search", "a red car", "--json", "--limit", "10", "--exact").stdout)
    assert [h["path"] for h in fast] == [h["path"] for h in exact]


def test_embed_json_shapes(indexed):
    out = json.loads(run("embed", "a cat", "--image", indexed["a.jpg"], "--image", indexed["c.png"], "--json").stdout)
    assert [sorted(o) for o in out] == [["embedding", "text"], ["embedding", "image"], ["embedding", "image"]]
    vectors = np.array([o["embedding"] for o in out])
    assert vectors.shape == (3, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    lines = run("embed", "a cat").stdout.splitlines()
    assert len(lines) == 1 and len(json.loads(lines[0])) == 32


def test_int8_is_opt_in_fixed_at_creation_and_close_to_fp32(indexed, isolated, tiny_model_name):
    fp32 = json.loads(run("embed", "--image", indexed["a.jpg"], "--json").stdout)[0]["embedding"]
    result = run("index", isolated / "photos", "--int8", ok=False)
    assert result.exit_code != 0 and "fp32" in result.stderr and "int8" in result.stderr
    other = isolated / "int8-library"
    index_json(isolated / "photos", "--model", tiny_model_name, "--int8", "--library", other)
    status = json.loads(run("status", "--json", "--library", other).stdout)
    assert status["image_precision"] == "int8"
    int8 = json.loads(run("embed", "--image", indexed["a.jpg"], "--json", "--library", other).stdout)[0]["embedding"]
    assert 0.99 < float(np.dot(fp32, int8)) < 1.0
    hits = json.loads(run("search", "--image", indexed["a.jpg"], "--json", "--library", other).stdout)
    assert hits[0]["path"] == str(indexed["a.jpg"])


def test_kept_image_count_matches_the_rows(indexed, isolated):
    folder = isolated / "photos"
    photo(77).save(folder / "extra.png")
    indexed["b.JPEG"].unlink()
    (folder / "c.png").write_text("now broken")
    index_json(folder)
    rows = catalog_query(isolated / "library", "SELECT count(*) FROM images")[0][0]
    kept = int(catalog_meta(isolated / "library")["image_count"])
    assert kept == rows == len(GOOD) - 1
