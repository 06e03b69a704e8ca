"""The numpy text tower is used only when its export is intact; otherwise status says torch and a query says so once."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.cli import cli, run
from helpers.images import GOOD, make_library_folder
from indexer.model.tower_manifest import MANIFEST_FILE
from searchengine.library.api import Library


@pytest.fixture
def library(isolated, tiny_model_name):
    photos = make_library_folder(isolated / "photos")
    run("index", photos[GOOD[0]].parent, "--model", tiny_model_name)
    return isolated / "library"


def status() -> dict:
    return json.loads(run("status", "--json").stdout)


def damage(path) -> None:
    """Same size, different weights: only a check of the values can tell."""
    data = bytearray(path.read_bytes())
    noise = np.random.default_rng(0).normal(0, 5, (len(data) - 128) // 4).astype(np.float32).tobytes()
    data[128:128 + len(noise)] = noise
    path.write_bytes(bytes(data))


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "numpy text tower cannot be used" in line]


def test_intact_export_is_used_silently(library):
    figures = status()
    assert figures["text_encoder"] == "numpy" and figures["text_encoder_note"] == ""
    assert notices(run("search", "a dog").stderr) == []


@pytest.mark.parametrize("harm", ["delete", "damage", "no manifest"])
def test_broken_export_says_torch_and_query_says_so_once(library, harm):
    tower = library / "text_tower"
    expected = Library.open(library).embed(texts=["a red car"])[0]
    if harm == "delete":
        (tower / "fc_weight.npy").unlink()
    elif harm == "damage":
        damage(tower / "fc_weight.npy")
    else:
        (tower / MANIFEST_FILE).unlink()
    figures = status()
    assert figures["text_encoder"] == "torch"
    assert figures["text_encoder_note"]
    result = run("search", "a dog", "--json")
    assert len(notices(result.stderr)) == 1 and json.loads(result.stdout)
    said = []
    lib = Library.open(library, notice=said.append)
    got = [lib.embed(texts=["a red car"])[0] for _ in range(3)]
    lib.search(text="a cat")
    assert len([m for m in said if "numpy text tower" in m]) == 1
    for row in got:  # torch's answer, not the damaged export's
        assert float(row @ expected) > 0.999


def test_next_index_run_re_exports_a_broken_export(library):
    damage(library / "text_tower" / "fc_weight.npy")
    assert status()["text_encoder"] == "torch"
    run("index", library.parent / "photos")
    assert status()["text_encoder"] == "numpy"
    assert notices(run("search", "a dog").stderr) == []


def test_damage_is_caught_even_with_the_file_times_put_back(library):
    """The probe is skipped only for files with the signature recorded at export: restoring a damaged file's
    mtime does not restore its ctime, so the probe runs and catches the damage."""
    weights = library / "text_tower" / "fc_weight.npy"
    before = weights.stat()
    damage(weights)
    import os

    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns
    result = run("search", "a dog", "--json")
    assert len(notices(result.stderr)) == 1 and json.loads(result.stdout)


def test_the_probe_runs_only_when_a_file_is_not_as_exported(library, monkeypatch):
    monkeypatch.setenv("SEARCHENGINE_PROFILE", "1")

    def steps() -> set[str]:
        result = cli("search", "a dog", "--json", "--library", library)  # a new process, as a user's query
        assert result.returncode == 0 and notices(result.stderr) == []
        return set(json.loads(result.stderr.strip().splitlines()[-1])["profile_ms"])

    assert "text encoding" in steps()  # the files the export verified: no probe
    weights = library / "text_tower" / "fc_weight.npy"
    weights.chmod(weights.stat().st_mode)  # same bytes, a new ctime: no longer known to be as exported
    assert "text encoding (with the probe)" in steps()


def test_an_older_export_is_re_exported_once_by_the_next_index_run(library):
    """An export made before the stat signatures and the rank table (both make a new process's first query cheaper)
    still answers; the next index run replaces it with a current one, and the run after leaves it alone."""
    from indexer.model.tokenizer import RANKS_FILE
    from indexer.model.tower_manifest import outdated

    tower = library / "text_tower"
    manifest = json.loads((tower / MANIFEST_FILE).read_text())
    for key in ("signatures", "numpy"):
        manifest.pop(key)
    manifest["files"].pop(RANKS_FILE)
    (tower / RANKS_FILE).unlink()
    (tower / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert outdated(tower) and status()["text_encoder"] == "numpy"
    assert notices(run("search", "a dog").stderr) == []
    run("index", library.parent / "photos")
    assert (tower / RANKS_FILE).exists() and not outdated(tower)
    exported = (tower / MANIFEST_FILE).stat().st_mtime_ns
    run("index", library.parent / "photos")
    assert (tower / MANIFEST_FILE).stat().st_mtime_ns == exported
