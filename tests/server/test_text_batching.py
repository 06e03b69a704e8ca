"""Concurrent text queries are encoded together (one pass over the text tower for all), and each still gets
exactly the vector it gets alone: the same answer whether it arrived alone or with fifteen others."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from helpers.server import build_library, client
from searchengine.library.api import Library
from searchengine.server.batching import TextBatcher

TEXTS = [f"a photo of {thing}" for thing in ("a dog", "a cat", "a red car", "snow", "a beach", "a bicycle",
                                             "a city at night", "a forest", "a bowl of soup", "a castle")]


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_name):
    return build_library(tmp_path_factory.mktemp("batching"), tiny_model_name)[1]


def test_waiting_texts_form_one_batch_and_each_gets_its_own_vector():
    release, first_started = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        first_started.set()
        release.wait(10)
        return [np.full(3, len(t), np.float32) for t in texts]

    batcher = TextBatcher(encode)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher.vector, "x")
        first_started.wait(10)  # the worker is busy with "x": what arrives now waits for the next batch
        rest = [pool.submit(batcher.vector, text) for text in ["aa", "bbb", "aa", "cccc"]]
        while sum(len(item) for item in batcher._pending) < 4:
            threading.Event().wait(0.01)
        release.set()
        assert first.result().tolist() == [1, 1, 1]
        assert [f.result()[0] for f in rest] == [2, 3, 2, 4]
    assert calls == [["x"], ["aa", "bbb", "cccc"]]  # one batch for the four waiting, "aa" encoded once
    assert list(batcher.batches) == [1, 3]


def test_an_encoder_error_reaches_every_waiter():
    def encode(texts):
        raise RuntimeError("the model is gone")

    batcher = TextBatcher(encode)
    with pytest.raises(RuntimeError, match="model is gone"):
        batcher.vector("a dog")


def test_texts_encoded_together_are_bit_identical_to_each_alone(library):
    lib = Library.open(library)
    alone = [lib.text_vector(t) for t in TEXTS]
    together = Library.open(library).text_vectors(TEXTS)  # a fresh process's first call: the probe beside them
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def test_sixteen_clients_at_once_get_the_answers_each_gets_alone(library):
    alone = {t: client(library).get("/api/search", params={"q": t, "limit": 10}).json() for t in TEXTS}
    app = client(library)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda t: (t, app.get("/api/search", params={"q": t, "limit": 10}).json()),
                                TEXTS * 2))
    assert all(answer == alone[text] for text, answer in answers)


def test_a_server_stacks_the_texts_that_arrive_together(library, monkeypatch):
    """At start the server checks that stacked texts keep their lone bits here and from then on encodes a batch in
    one product per weight; the answers are the ones each text gets alone."""
    from indexer.model import numpy_text
    from searchengine.server.app import create_app

    alone = [Library.open(library).text_vector(t) for t in TEXTS]
    lib = Library.open(library)
    create_app(lib)
    deadline = time.monotonic() + 60
    while not lib._query_encoder().stacking and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lib._query_encoder().stacking
    products: list[int] = []
    real = numpy_text._matmuls
    monkeypatch.setattr(numpy_text, "_matmuls", lambda xs, w: products.append(len(xs)) or real(xs, w))
    together = lib.text_vectors(TEXTS)
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
    assert set(products) == {1} and len(products) == 4 * lib._query_encoder()._numpy_text[0].meta.layers


def _backend_with_child(library):
    from searchengine.server.backend import Backend

    backend = Backend(Library.open(library), text_process=True)
    deadline = time.monotonic() + 120
    while backend.encoder is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.encoder is not None, "the text encoder process did not start"
    return backend


def test_a_server_encodes_texts_in_a_child_process_with_the_bits_they_get_alone(library, monkeypatch):
    """`serve` encodes texts in a child (no GIL shared with the request threads); same code, same bits."""
    import os

    alone = [Library.open(library).text_vector(t) for t in TEXTS]
    backend = _backend_with_child(library)
    try:
        assert backend.encoder.pid != os.getpid()
        monkeypatch.setattr(backend.library, "text_vectors", lambda texts: pytest.fail("encoded in the server"))
        together = backend._encode_texts(TEXTS)
        assert all(np.array_equal(a, b) for a, b in zip(alone, together))
        assert np.array_equal(backend.batcher.vector("a photo of snow"), alone[TEXTS.index("a photo of snow")])
    finally:
        backend.close()


def test_when_the_child_is_gone_the_server_encodes_in_its_own_process(library):
    import os
    import signal

    alone = [Library.open(library).text_vector(t) for t in TEXTS]
    backend = _backend_with_child(library)
    os.kill(backend.encoder.pid, signal.SIGKILL)
    together = backend._encode_texts(TEXTS)
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
    assert backend.encoder.encode(TEXTS) is None  # given up: no further tries at a dead pipe


def test_the_child_ends_when_the_server_lets_it_go(library):
    import os

    backend = _backend_with_child(library)
    pid = backend.encoder.pid
    backend.encoder._proc.stdin.close()  # what the server's exit does to the pipe
    backend.encoder._proc.wait(30)
    assert backend.encoder._proc.returncode == 0
    try:
        os.kill(pid, 0)
        gone = False
    except ProcessLookupError:
        gone = True
    assert gone


def test_output_the_child_did_not_mean_for_the_server_does_not_reach_its_answers(library):
    """A C library printing to the child's stdout (fd 1) would corrupt the protocol: fd 1 goes to stderr there."""
    import json
    import struct
    import subprocess
    import sys

    from helpers import REPO

    code = (
        "import os, sys\n"
        "from searchengine.server import encoder\n"
        "real = encoder.serve_requests\n"
        "def noisy(folder, requests, answers):\n"
        "    os.write(1, b'stray output from C code\\n')\n"
        "    real(folder, requests, answers)\n"
        "encoder.serve_requests = noisy\n"
        f"sys.argv = ['encoder', {str(library)!r}]\n"
        "encoder.main()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert child.stdout.read(1) == b"R"
        (dim,) = struct.unpack("<I", child.stdout.read(4))
        request = json.dumps(TEXTS[:2]).encode()
        child.stdin.write(struct.pack("<I", len(request)) + request)
        child.stdin.flush()
        assert child.stdout.read(1) == b"V"
        rows = np.frombuffer(child.stdout.read(4 * dim * 2), np.float32).reshape(2, dim)
    finally:
        child.stdin.close()
        child.wait(30)
    alone = [Library.open(library).text_vector(t) for t in TEXTS[:2]]
    assert np.array_equal(rows[0], alone[0]) and np.array_equal(rows[1], alone[1])
    assert b"stray output" in child.stderr.read()


def test_a_child_that_stops_answering_is_killed_and_the_server_encodes_itself(library, monkeypatch):
    """Never a hang: a child silent past the timeout (here stopped with SIGSTOP) is killed, and the batch is
    encoded in the server's own process, with the same bits."""
    import os
    import signal

    from searchengine.server import encoder as encoder_module

    alone = [Library.open(library).text_vector(t) for t in TEXTS]
    backend = _backend_with_child(library)
    monkeypatch.setattr(encoder_module, "ANSWER_TIMEOUT_S", 1.0)
    os.kill(backend.encoder.pid, signal.SIGSTOP)
    started = time.monotonic()
    together = backend._encode_texts(TEXTS)
    assert time.monotonic() - started < 15
    assert all(np.array_equal(a, b) for a, b in zip(alone, together))
    assert backend.encoder._proc.wait(10) is not None  # killed, and reaped
