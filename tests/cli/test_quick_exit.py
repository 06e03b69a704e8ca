"""After a read-only command that succeeded, the program exits without the interpreter's teardown (os._exit),
its output flushed; a failed command, and any command that writes, exits the normal way."""
from __future__ import annotations

import json
import sys

import pytest

from helpers.cli import cli
from helpers.images import GOOD
from searchengine.cli import base


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch):
    """The os._exit codes `entry` asked for (os._exit replaced by an exception)."""
    codes: list[int] = []

    def record(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(base.os, "_exit", record)
    monkeypatch.setattr(base, "_quick_exit", [False])
    return codes


def run_entry(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["searchengine", *map(str, args)])
    base.entry()


def test_a_search_exits_quickly_with_its_output_flushed(indexed, exits, monkeypatch, capsys):
    with pytest.raises(Exited):
        run_entry(monkeypatch, "search", "a red bicycle", "--json")
    assert exits == [0]
    assert json.loads(capsys.readouterr().out)


def test_a_failed_search_and_an_index_run_exit_the_normal_way(indexed, exits, monkeypatch, tmp_path):
    with pytest.raises(SystemExit) as failed:
        run_entry(monkeypatch, "search", "a dog", "--library", tmp_path / "no-library-here")
    assert failed.value.code == 1 and exits == []
    run_entry(monkeypatch, "index", indexed[GOOD[0]].parent, "--json")
    assert exits == []


def test_the_program_prints_everything_a_pipe_reads(indexed):
    """A real process: the quick exit loses nothing of a long answer written into a pipe."""
    done = cli("search", "a photo", "--json", "--limit", "500")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == len(GOOD)
