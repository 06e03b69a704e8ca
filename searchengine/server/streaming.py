"""A video file to the client: the whole of it or one byte range, read from an open descriptor chunk by chunk.

Never more than one chunk in memory; reads wait for the client (the server's write flow control), and stop as
soon as it goes away (a player that seeks drops its open-ended request and asks again from elsewhere).
"""
from __future__ import annotations

import os
from typing import Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

CHUNK_BYTES = 256 << 10


class FileSpanResponse(Response):
    """`length` bytes of `fd` from `start`; owns `fd` and closes it once sent, abandoned, or never sent."""

    def __init__(self, fd: int, start: int, length: int, status_code: int, headers: Mapping[str, str],
                 media_type: str) -> None:
        self.fd: int | None = fd
        self.start, self.length = start, length
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers({**headers, "Content-Length": str(length)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope.get("method") == "HEAD" or self.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            async with anyio.create_task_group() as group:
                async def body() -> None:
                    await self._send_body(send)
                    group.cancel_scope.cancel()

                async def disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(body)
                group.start_soon(disconnect)
        finally:
            self.close()

    async def _send_body(self, send: Send) -> None:
        offset, left = self.start, self.length
        fd = self.fd
        while left > 0:
            chunk = await anyio.to_thread.run_sync(os.pread, fd, min(CHUNK_BYTES, left), offset)
            if not chunk:  # the file shrank while being sent: the body ends short, the client sees it is cut
                break
            offset += len(chunk)
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
        if left > 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:  # a response made but never sent (an error after the route returned)
        self.close()
