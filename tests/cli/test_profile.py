"""SEARCHENGINE_PROFILE=1 makes a query report the wall time of its steps (scripts/profile_query.py reads it);
without it nothing is reported, and the answer is the same either way."""
from __future__ import annotations

import json

from helpers.cli import cli

STEPS = {"argument parsing", "library open", "index load", "text tower load (manifest check)",
         "text encoding", "index search", "stat of hits", "metadata", "words", "output"}


def test_profile_reports_every_step_of_a_text_query(indexed, monkeypatch):
    plain = cli("search", "a red bicycle", "--json")
    assert plain.returncode == 0, plain.stderr
    assert "profile_ms" not in plain.stderr
    monkeypatch.setenv("SEARCHENGINE_PROFILE", "1")
    profiled = cli("search", "a red bicycle", "--json")
    assert profiled.returncode == 0, profiled.stderr
    assert json.loads(profiled.stdout) == json.loads(plain.stdout)
    steps = json.loads(profiled.stderr.strip().splitlines()[-1])["profile_ms"]
    assert set(steps) == STEPS
    assert all(ms >= 0 for ms in steps.values()) and steps["text encoding"] > 0
