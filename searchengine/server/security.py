"""Who may talk to the server: Host-header check on loopback (DNS rebinding), token check, safety headers.

A plain ASGI middleware (no per-request task or body copy), so a cached thumbnail stays cheap.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

TOKEN_COOKIE = "searchengine_token"
TOKEN_ENV = "SEARCHENGINE_TOKEN"
CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SAFETY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def is_loopback_host(host: str) -> bool:
    """True for localhost names and loopback addresses (the serve address, not a Host header)."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_header_name(value: str) -> str:
    """The name part of a Host header: `[::1]:8765` -> `::1`, `localhost:8765` -> `localhost`."""
    value = value.strip()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def new_token() -> str:
    return secrets.token_urlsafe(24)


def tokens_equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


@dataclass
class AccessPolicy:
    loopback: bool
    token: str | None


class Guard:
    """Refuses foreign Host headers (loopback) and requests without the token; adds the safety headers."""

    def __init__(self, app: ASGIApp, policy: AccessPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.policy.loopback and not is_loopback_host(host_header_name(headers.get("host", ""))):
            await _refuse(send, 403, "this server only answers requests addressed to localhost")
            return
        if self.policy.token is not None:
            given = self._token_from_query(scope)
            if given is not None and scope["path"] == "/" and tokens_equal(given, self.policy.token):
                await _set_cookie_and_redirect(send, self.policy.token)
                return
            if not self._authorised(headers):
                await _refuse(send, 401, "a token is needed: open the URL `searchengine serve` printed, "
                                         "or send Authorization: Bearer TOKEN")
                return
        await self.app(scope, receive, _with_safety_headers(send))

    def _authorised(self, headers: dict[str, str]) -> bool:
        token = self.policy.token or ""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and tokens_equal(auth[7:].strip(), token):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is just no token
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and tokens_equal(morsel.value, token)

    @staticmethod
    def _token_from_query(scope: Scope) -> str | None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return values[0] if values else None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _with_safety_headers(send: Callable) -> Callable:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = list(message.get("headers", [])) + SAFETY_HEADERS
        await send(message)

    return wrapped


async def _refuse(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                + SAFETY_HEADERS})
    await send({"type": "http.response.body", "body": body})


async def _set_cookie_and_redirect(send: Callable, token: str) -> None:
    """The token leaves the address bar (and history) at once; the page then works from the cookie."""
    cookie = f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode()
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", b"/"), (b"set-cookie", cookie), (b"content-length", b"0"),
                            (b"cache-control", b"no-store")] + SAFETY_HEADERS})
    await send({"type": "http.response.body", "body": b""})
