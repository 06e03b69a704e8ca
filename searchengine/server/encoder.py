"""The server's text encoding in a process of its own, so that it does not share the server's GIL.

Under load the server's request threads (routing, JSON, searches) and the text tower took turns at one GIL: the
tower hands it back and takes it again around each of its ~500 numpy calls a batch, and each time waited behind
the others (measured here, 16 clients: a batch of 8 texts took ~300 ms in the server against ~90 ms alone, and the
server used one of the two cores). The child runs the same code (`Library.text_vectors`, stacking checked as in
the server) on the same machine, so a text gets the very bits it gets in the server's own process or a CLI.

Protocol on the child's stdin/stdout: once ready, the child writes b"R" and the embedding's dimension (4 bytes); a
request is a 4-byte length and a JSON list of texts; the answer is b"V" and n x dim float32 rows, or b"E" and a
4-byte length and a UTF-8 message. The child ends when its stdin closes (the server exited or gave it up). On any
failure (the child gone, cut short, or silent for ANSWER_TIMEOUT_S) the server encodes in its own process. POSIX
only (select on pipes); elsewhere `serve` encodes in its own process.
"""
from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

READY_TIMEOUT_S = 120.0
ANSWER_TIMEOUT_S = 30.0  # a batch of 32 texts takes ~0.5 s: a child this late is stuck, and is killed


class EncoderProcess:
    """A child that encodes texts for the server; `encode` returns None whenever it cannot (not ready, gone, stuck)."""

    def __init__(self, folder: Path):
        self.dim = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._dead = False
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "searchengine.server.encoder", os.fspath(folder)], bufsize=0,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)  # Ctrl-C is the server's to handle
        threading.Thread(target=self._await_ready, name="text-encoder-start", daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and not self._dead

    def _await_ready(self) -> None:
        try:
            if self._read(1, READY_TIMEOUT_S) == b"R":
                (self.dim,) = struct.unpack("<I", self._read(4, ANSWER_TIMEOUT_S))
                self._ready.set()
                return
        except (OSError, ValueError):
            pass
        self._give_up()
        self._ready.set()

    def encode(self, texts: Sequence[str]) -> list[np.ndarray] | None:
        if not self._ready.is_set() or self._dead:
            return None
        request = json.dumps(list(texts)).encode("utf-8")
        with self._lock:
            try:
                self._write(struct.pack("<I", len(request)) + request)
                kind = self._read(1, ANSWER_TIMEOUT_S)
                if kind == b"V":
                    rows = np.frombuffer(self._read(4 * self.dim * len(texts), ANSWER_TIMEOUT_S), np.float32)
                    return list(rows.reshape(len(texts), self.dim))
                if kind == b"E":
                    (length,) = struct.unpack("<I", self._read(4, ANSWER_TIMEOUT_S))
                    self._read(length, ANSWER_TIMEOUT_S)  # the child's own error: the server's encoding says it
                    return None
            except (OSError, ValueError):  # gone, cut short, or stuck past the timeout (TimeoutError)
                pass
        self._give_up()
        return None

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._proc.stdin.fileno(), view):]

    def _read(self, size: int, timeout: float) -> bytes:
        """`size` bytes of the child's answer, or TimeoutError / ValueError (the pipe closed before)."""
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        while size:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError("the text encoder did not answer in time")
            chunk = os.read(fd, size)
            if not chunk:
                raise ValueError("the text encoder's answer was cut short")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _give_up(self) -> None:
        self._dead = True
        self._proc.kill()  # stuck or half-gone: nothing it says can be trusted any more
        self.close()

    def close(self) -> None:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise ValueError("the text encoder's request was cut short")
    return data


def serve_requests(folder: Path, requests: BinaryIO, answers: BinaryIO) -> None:
    """The child's loop: encode each request with the library's text path until `requests` ends."""
    from searchengine.library.api import Library

    library = Library.open(folder)
    library.stack_texts()
    answers.write(b"R" + struct.pack("<I", len(library.text_vector("a photo"))))
    answers.flush()
    while True:
        head = requests.read(4)
        if len(head) < 4:
            return
        (length,) = struct.unpack("<I", head)
        try:
            texts = json.loads(_read_exactly(requests, length).decode("utf-8"))
            rows = np.stack(library.text_vectors(texts)).astype(np.float32, copy=False)
            answer = b"V" + rows.tobytes()
        except Exception as exc:  # noqa: BLE001 - reported to the server, which then encodes in its own process
            message = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
            answer = b"E" + struct.pack("<I", len(message)) + message
        answers.write(answer)
        answers.flush()


def main() -> None:
    from indexer.cpu import pin_blas_to_one_thread

    pin_blas_to_one_thread()  # as a CLI query: the tower's own two-way split, no BLAS threads
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing else may write to the answers: not even C code
    sys.stdout = sys.stderr
    try:
        serve_requests(Path(sys.argv[1]), sys.stdin.buffer, answers)
    except (KeyboardInterrupt, BrokenPipeError):
        pass


if __name__ == "__main__":
    main()
