"""search --copy-to / --link-to, and the export API (searchengine/cli/copy_out.py)."""
from __future__ import annotations

import json
import os

import pytest

from helpers.cli import run
from indexer.errors import SearchEngineError
from searchengine.cli.copy_out import export

# `indexed` (every test format, indexed) is tests/conftest.py's.


def test_copy_keeps_names_and_numbers_clashes(isolated):
    (isolated / "x").mkdir()
    (isolated / "y").mkdir()
    for folder in ("x", "y"):
        (isolated / folder / "cat.jpg").write_bytes(folder.encode())
    (isolated / "x" / "noext").write_bytes(b"n")
    out = isolated / "out" / "deeper"
    written = export([isolated / "x" / "cat.jpg", isolated / "y" / "cat.jpg", isolated / "x" / "noext"], out)
    assert [os.path.basename(w) for w in written] == ["cat.jpg", "cat (2).jpg", "noext"]
    assert (out / "cat.jpg").read_bytes() == b"x" and (out / "cat (2).jpg").read_bytes() == b"y"
    again = export([isolated / "x" / "cat.jpg"], out)  # existing files are never overwritten
    assert os.path.basename(again[0]) == "cat (3).jpg" and (out / "cat.jpg").read_bytes() == b"x"


def test_link_makes_symlinks_to_the_originals(isolated):
    (isolated / "a.jpg").write_bytes(b"a")
    written = export([isolated / "a.jpg"], isolated / "links", mode="link")
    assert os.path.islink(written[0]) and os.readlink(written[0]) == str(isolated / "a.jpg")


def test_export_errors_are_domain_errors(isolated):
    (isolated / "a.jpg").write_bytes(b"a")
    (isolated / "file").write_bytes(b"")
    with pytest.raises(SearchEngineError, match="cannot create folder"):
        export([isolated / "a.jpg"], isolated / "file" / "sub")
    with pytest.raises(SearchEngineError, match="cannot copy"):
        export([isolated / "gone.jpg"], isolated / "out")


def test_search_copy_to_and_link_to(indexed, isolated):
    hits = json.loads(run("search", "a red car", "--json", "--limit", "5").stdout)
    result = run("search", "a red car", "--limit", "5", "--copy-to", isolated / "picked")
    assert "copied 5 files" in result.stderr
    copied = sorted(os.listdir(isolated / "picked"))
    assert copied == sorted(os.path.basename(h["path"]) for h in hits)
    run("search", "a red car", "--limit", "5", "--link-to", isolated / "linked")
    targets = sorted(os.readlink(isolated / "linked" / n) for n in os.listdir(isolated / "linked"))
    assert targets == sorted(h["path"] for h in hits)
    result = run("search", "x", "--copy-to", isolated / "a.jpg", "--link-to", isolated / "b", ok=False)
    assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1
    (isolated / "blocker").write_bytes(b"")
    result = run("search", "x", "--copy-to", isolated / "blocker", ok=False)
    assert result.exit_code != 0 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_search_min_score_and_cutoff_options(indexed):
    hits = json.loads(run("search", "--image", indexed["a.jpg"], "--json", "--limit", "100").stdout)
    floor = hits[3]["score"] - 1e-6  # JSON scores are rounded to 6 places
    kept = json.loads(run("search", "--image", indexed["a.jpg"], "--json", "--limit", "100",
                          "--min-score", str(floor)).stdout)
    assert kept == [h for h in hits if h["score"] >= floor] and len(kept) >= 4
    auto = json.loads(run("search", "--image", indexed["a.jpg"], "--json", "--cutoff", "auto").stdout)
    assert auto == hits[:len(auto)]  # what stands out is a prefix (random weights: maybe nothing does)
    result = run("search", "x", "--cutoff", "sometimes", ok=False)
    assert result.exit_code != 0 and "--cutoff" in result.stderr
