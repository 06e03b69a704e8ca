"""Start the server: bind first (a port in use is a one-line error), print the URL, serve until Ctrl-C."""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Callable, Optional

from indexer.errors import SearchEngineError
from searchengine.library.api import Library
from searchengine.server.security import TOKEN_ENV, is_loopback_host, new_token


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    token: Optional[str] = None
    max_upload_mb: int = 20
    watch: bool = False


def resolve_token(options: ServeOptions) -> tuple[Optional[str], bool]:
    """(token, generated): loopback needs none unless given; any other host always has one."""
    token = options.token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback_host(options.host):
        return new_token(), True
    return token, False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (port in use, address not here)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host.strip("[]")).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only then; without it each
    # response's body waits ~40 ms behind the headers (Nagle against the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise SearchEngineError(f"port {port} is already in use on {host}; choose another with --port") from None
        raise SearchEngineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}/"


def serve(library: Library, options: ServeOptions, announce: Callable[[str], None]) -> None:
    """Serve until interrupted; returns normally on Ctrl-C or SIGTERM."""
    import uvicorn

    from searchengine.server.app import ServerConfig, WatchState, create_app

    library.status()  # no library: a one-line error before anything listens
    token, generated = resolve_token(options)
    loopback = is_loopback_host(options.host)
    sock = bind(options.host, options.port)
    state = WatchState()
    server_config = ServerConfig(options.max_upload_mb << 20, token, loopback, text_process=os.name == "posix")
    app = create_app(library, server_config, state)
    watcher = None
    if options.watch:
        from searchengine.server.watch import Watcher

        watcher = Watcher(Library.open(library.folder, library.notice), state)
    url = url_of(sock, options.host)
    announce(f"{url}?token={token}" if token and generated else url)
    if token and generated:
        announce("(a token was generated for this run; keep the URL private)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, date_header=False,
                            timeout_graceful_shutdown=3, lifespan="off")
    server = uvicorn.Server(config)
    if watcher is not None:
        watcher.start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled, once it has shut down cleanly
    finally:
        if watcher is not None:
            watcher.stop()
        sock.close()
