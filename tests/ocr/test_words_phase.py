"""The words phase of an index run: the embeddings are searchable before the words are read, a run killed while
reading resumes where it stopped (nothing read twice, nothing lost), and a video's moments get their frames read."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from helpers.catalog import raw_sqlite
from helpers.cli import cli, index_json, run, start
from helpers.faults import image_count, kill_group, wait_for
from helpers.texts import text_picture
from helpers.videos import make_video

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra: pip install 'searchengine[ocr]'")

WORDS = ("harbour meadow violet copper lantern saddle pepper walnut thunder marble orchid tunnel cobalt falcon "
         "velvet timber canyon glacier ember quartz").split()


def texts_read(library: Path) -> int:
    try:
        with raw_sqlite(library, read_only=True, timeout=30) as conn:
            return conn.execute("SELECT count(*) FROM texts").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # no catalog, or no texts table yet


def test_a_run_killed_while_reading_words_resumes_where_it_stopped(tmp_path, tiny_model_name):
    folder = tmp_path / "photos"
    folder.mkdir()
    for n, word in enumerate(WORDS):
        text_picture([word.upper(), f"page {n}"], seed=n, text_px=36).save(folder / f"{word}.png")
    library = tmp_path / "library"
    proc = start("index", folder, "--library", library, "--model", tiny_model_name, "--ocr", "--workers", "1",
                 log=tmp_path / "first")
    try:
        assert wait_for(lambda: texts_read(library) >= 3, proc, timeout=240), "the words phase never started"
        assert image_count(library) == len(WORDS)  # every embedding was committed before the words
        assert kill_group(proc), "the run ended before it could be killed"
    finally:
        if proc.poll() is None:
            kill_group(proc)
    done = texts_read(library)
    assert 3 <= done < len(WORDS)
    searched = json.loads(cli("search", "--library", library, "a lantern", "--json").stdout)
    assert len(searched) == len(WORDS)  # searchable by CLIP all along
    summary = json.loads(cli("index", folder, "--library", library, "--json").stdout)  # --ocr is remembered
    assert summary["words_read"] == len(WORDS) - done and summary["added"] == 0
    with raw_sqlite(library, read_only=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT content_hash) FROM texts").fetchone() == (len(WORDS),) * 2
        assert conn.execute("SELECT count(*) FROM text_words").fetchone()[0] == len(WORDS)
    for word in WORDS:
        hits = json.loads(run("search", "--library", library, "--words", word, "--json").stdout)
        assert [Path(h["path"]).name for h in hits] == [f"{word}.png"], word


def _still(text: str, dark: bool):
    picture = np.asarray(text_picture([text], size=(320, 240), text_px=40, dark=dark, photo=False))
    return lambda t, size: picture


def test_video_moments_are_read_frame_by_frame(tmp_path, tiny_model_name):
    folder = tmp_path / "clips"
    folder.mkdir()
    make_video(folder / "talk.mp4", [(_still("WELCOME", False), 2.0), (_still("GOODBYE", True), 2.0)], size=(320, 240))
    summary = index_json(folder, "--model", tiny_model_name, "--ocr")
    assert summary["videos"] == 1 and summary["segments"] >= 2 and summary["words_read"] == summary["segments"]
    welcome = json.loads(run("search", "--words", "welcome", "--moments", "--json").stdout)
    goodbye = json.loads(run("search", "--words", "goodbye", "--moments", "--json").stdout)
    # a dark and a light scene: a cut between them
    assert welcome and goodbye and {h["kind"] for h in welcome + goodbye} == {"video"}
    assert max(h["start_s"] for h in welcome) < 2.0 <= min(h["start_s"] for h in goodbye)
    assert goodbye[0]["words"][0]["text"] == "GOODBYE"


def test_photos_without_text_are_settled_by_the_decode_workers_gate(tmp_path, tiny_model_name, monkeypatch):
    """The decode already made a reduced image: OCR's gate looks at it there, and the words phase reads only the
    photos where it saw text."""
    from helpers.texts import background
    from indexer.pipeline import ocr

    folder = tmp_path / "photos"
    folder.mkdir()
    text_picture(["Harbour master"], seed=1).save(folder / "sign.jpg")
    for n in range(3):
        background((640, 480), seed=10 + n).save(folder / f"plain{n}.jpg")
    read_later = []
    real = ocr.Reader.read
    monkeypatch.setattr(ocr.Reader, "read", lambda self, group: read_later.extend(group) or real(self, group))
    summary = index_json(folder, "--model", tiny_model_name, "--ocr", "--workers", "0")
    assert [Path(t.path.decode()).name for t in read_later] == ["sign.jpg"]
    assert (summary["words_read"], summary["words_with_text"]) == (4, 1)
    assert [Path(h["path"]).name for h in json.loads(run("search", "--words", "harbour", "--json").stdout)] == ["sign.jpg"]
