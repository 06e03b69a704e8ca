"""An index run yields the cores to queries: `index` and `serve --watch`'s indexing thread run niced."""
from __future__ import annotations

import json
import os

from helpers.cli import python, run
from indexer import cpu


def test_yield_to_queries_nices_the_thread_and_what_it_starts():
    code = ("import json, os, threading\n"
            "from indexer.cpu import yield_to_queries\n"
            "mine = lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
            "try:\n"  # an index run earlier in this test process niced it (and so this child): undo where allowed
            "    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 0)\n"
            "except OSError:\n"
            "    pass\n"
            "before = mine(); yield_to_queries(); after = mine(); seen = []\n"
            "t = threading.Thread(target=lambda: seen.append(mine())); t.start(); t.join()\n"
            "print(json.dumps([before, after, seen[0]]))\n")
    done = python(code, capture_output=True, text=True, check=True)
    before, after, child = json.loads(done.stdout)
    assert after == child == max(before, cpu.INDEX_NICENESS)
    if os.geteuid() == 0:  # root could reset it: the call itself lowered the priority
        assert before < cpu.INDEX_NICENESS


def test_the_index_command_yields_before_it_indexes(photos, isolated, tiny_model_name, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "yield_to_queries", lambda: calls.append("yielded"))
    run("index", isolated / "photos", "--model", tiny_model_name, "--json")
    assert calls == ["yielded"]
