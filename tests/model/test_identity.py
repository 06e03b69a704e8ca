"""A `local-dir:` (or checkpoint-file) model is its weights, not its path: replaced weights are refused."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers.catalog import catalog_meta, raw_sqlite, read_catalog
from helpers.cli import run
from helpers.images import make_photos
from helpers.model import rewrite_tiny_model
from indexer.model.clip import ModelSpec
from indexer.model.identity import FINGERPRINT_KEY, PREPROCESS_KEY, weight_files, weights_fingerprint


def state(library: Path) -> tuple:
    with read_catalog(library) as conn:
        return (sorted(conn.exec_driver_sql("SELECT key, value FROM meta")),
                sorted(conn.exec_driver_sql("SELECT path, size, mtime_ns, content_hash, embedding FROM images")),
                sorted(conn.exec_driver_sql("SELECT path FROM failures")))


@pytest.fixture
def own_model(isolated, tiny_model_dir) -> Path:
    """A model folder this test may overwrite (a copy of the session's tiny model, seed 0)."""
    return Path(shutil.copytree(tiny_model_dir, isolated / "model"))


@pytest.fixture
def indexed(isolated, own_model) -> Path:
    make_photos(isolated / "photos", 6)
    run("index", isolated / "photos", "--model", f"local-dir:{own_model}")
    return isolated / "library"


def test_creation_records_the_fingerprint_and_preprocessing(indexed, own_model):
    recorded = catalog_meta(indexed)
    assert recorded[FINGERPRINT_KEY] == weights_fingerprint(ModelSpec.resolve(f"local-dir:{own_model}", None))
    assert recorded[FINGERPRINT_KEY].startswith("blake2b:")
    assert json.loads(recorded[PREPROCESS_KEY])["image_size"] == 224


def test_replaced_weights_are_refused_and_the_library_is_unchanged(indexed, isolated, own_model):
    before = state(indexed)
    old = catalog_meta(indexed)[FINGERPRINT_KEY]
    rewrite_tiny_model(own_model, seed=1)  # same path, other weights
    new = weights_fingerprint(ModelSpec.resolve(f"local-dir:{own_model}", None))
    assert run("index", isolated / "photos", ok=False).exit_code != 0  # refused even with nothing to encode
    gone = sorted((isolated / "photos").glob("*.png"))[0]
    gone.unlink()  # a removal the run would commit before encoding
    make_photos(isolated / "photos", 2, first_seed=2000)  # work that needs the model
    result = run("index", isolated / "photos", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and old[:20] in line and new[:20] in line and old != new
    assert state(indexed) == before
    rewrite_tiny_model(own_model, seed=0)  # the original weights back: accepted again
    summary = json.loads(run("index", isolated / "photos", "--json").stdout)
    assert (summary["added"], summary["removed"]) == (2, 1)


def test_queries_that_need_the_model_refuse_other_weights(indexed, isolated, own_model):
    outside = make_photos(isolated / "outside", 1, first_seed=3000)[0]
    rewrite_tiny_model(own_model, seed=1)
    assert json.loads(run("search", "a cat", "--json").stdout)  # numpy text tower: no model, nothing to mix
    indexed_photo = sorted((isolated / "photos").glob("*.png"))[0]
    assert json.loads(run("search", "--image", indexed_photo, "--json").stdout)  # its stored embedding
    result = run("search", "--image", outside, "--json", ok=False)
    assert result.exit_code != 0 and "weights" in result.stderr and "restore" in result.stderr
    shutil.rmtree(indexed / "text_tower")  # the torch text fallback needs the model too
    result = run("search", "a cat", ok=False)
    assert result.exit_code != 0 and "weights" in result.stderr
    result = run("embed", "--image", outside, ok=False)
    assert result.exit_code != 0 and "weights" in result.stderr


def test_a_changed_preprocessing_config_is_refused(indexed, isolated, own_model):
    config = json.loads((own_model / "open_clip_config.json").read_text())
    config["preprocess_cfg"]["mean"] = [0.5, 0.5, 0.5]
    (own_model / "open_clip_config.json").write_text(json.dumps(config))
    make_photos(isolated / "photos", 1, first_seed=2000)
    result = run("index", isolated / "photos", ok=False)
    assert result.exit_code != 0 and "weights" in result.stderr


def test_the_recorded_preprocessing_is_compared_after_loading(indexed, isolated):
    """Even with the same files (or a tag-named model), preprocessing that loads differently is refused."""
    with raw_sqlite(indexed) as conn:  # behind the product's back: what another version might have recorded
        recorded = json.loads(conn.execute("SELECT value FROM meta WHERE key=?", (PREPROCESS_KEY,)).fetchone()[0])
        recorded["image_size"] = 256
        conn.execute("UPDATE meta SET value=? WHERE key=?", (json.dumps(recorded, sort_keys=True), PREPROCESS_KEY))
    outside = make_photos(isolated / "outside", 1, first_seed=3000)[0]
    result = run("search", "--image", outside, ok=False)
    assert result.exit_code != 0 and "preprocessing" in result.stderr and '"image_size": 256' in result.stderr


def test_an_older_library_gets_its_fingerprint_on_its_next_index_run(indexed, isolated, own_model):
    with raw_sqlite(indexed) as conn:  # a library made before fingerprints were recorded
        conn.execute("DELETE FROM meta WHERE key IN (?, ?)", (FINGERPRINT_KEY, PREPROCESS_KEY))
    outside = make_photos(isolated / "outside", 1, first_seed=3000)[0]
    rewrite_tiny_model(own_model, seed=1)
    assert json.loads(run("search", "--image", outside, "--json").stdout)  # nothing recorded: nothing to refuse
    rewrite_tiny_model(own_model, seed=0)
    summary = json.loads(run("index", isolated / "photos", "--json").stdout)
    assert summary["encoded"] == 0  # an unchanged run records the fingerprint too (before anything else)
    assert catalog_meta(indexed)[FINGERPRINT_KEY] == weights_fingerprint(ModelSpec.resolve(f"local-dir:{own_model}", None))
    make_photos(isolated / "photos", 1, first_seed=2000)
    run("index", isolated / "photos")
    assert PREPROCESS_KEY in catalog_meta(indexed)  # recorded by the first run that loads the model
    rewrite_tiny_model(own_model, seed=1)
    assert run("search", "--image", outside, ok=False).exit_code != 0


def test_fingerprinted_files(tmp_path):
    checkpoint = tmp_path / "weights.bin"
    checkpoint.write_bytes(b"x" * 10)
    spec = ModelSpec("ViT-B-32", str(checkpoint))
    assert weight_files(spec) == [checkpoint]
    first = weights_fingerprint(spec)
    checkpoint.write_bytes(b"y" * 10)  # same size, other bytes
    assert weights_fingerprint(spec) != first
    assert weights_fingerprint(ModelSpec("ViT-B-32", "laion2b_s34b_b79k")) is None  # named by its tag


def test_unchanged_files_are_not_hashed_again_and_touched_ones_are(indexed, isolated, own_model, monkeypatch):
    import indexer.model.identity as identity

    outside = make_photos(isolated / "outside", 1, first_seed=3000)[0]
    hashed: list[str] = []
    real = identity.weights_fingerprint
    monkeypatch.setattr(identity, "weights_fingerprint", lambda spec: hashed.append(spec.name) or real(spec))
    assert json.loads(run("search", "--image", outside, "--json").stdout)
    assert hashed == []  # same inode, size, mtime and ctime as recorded: not read again
    weights = own_model / "open_clip_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # same bytes, new mtime
    assert json.loads(run("search", "--image", outside, "--json").stdout)
    assert len(hashed) == 1  # hashed, found equal, accepted
    make_photos(isolated / "photos", 1, first_seed=2000)
    run("index", isolated / "photos")  # a writer records the new signature...
    hashed.clear()
    assert json.loads(run("search", "--image", outside, "--json").stdout)
    assert hashed == []  # ...so the next load does not hash
