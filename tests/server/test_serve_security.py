"""The web app's safety: traversal attempts on every route, uploads (size, bombs, non-images), Host and token."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from helpers.images import bomb_png
from helpers.server import build_library, client
from searchengine.server.run import ServeOptions, resolve_token
from searchengine.server.security import is_loopback_host

SECRET = b"TOP-SECRET-MARKER-7f3a"


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_model_name) -> dict:
    base = tmp_path_factory.mktemp("serve-security")
    photos, library = build_library(base, tiny_model_name)
    secret_dir = base / "outside"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_bytes(SECRET)
    secret_img = secret_dir / "secret.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(secret_img, pnginfo=_png_text(SECRET))
    return {"photos": photos, "library": library, "client": client(library), "secret_dir": secret_dir}


def _png_text(text: bytes):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", text.decode())
    return info


ROUTES = ["/api/images/{}", "/api/images/{}/file", "/api/images/{}/thumbnail", "/api/images/{}/preview",
          "/api/images/{}/similar"]
ATTACKS = ["../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
           "%252e%252e%252fetc%252fpasswd", "..\\..\\..\\etc\\passwd", "%5c..%5c..%5cetc%5cpasswd", "/etc/passwd",
           "%2fetc%2fpasswd", "1%00", "1%00.jpg", "%00", "1/../../../etc/passwd", "C:\\Windows\\win.ini", "~root",
           "99999999999999999999999999999", "-1", "-9223372036854775809", "9223372036854775808", "0x10", "1e3",
           " 1", "1;2", "{secret}", "{secret_enc}", "file:%2f%2f%2fetc%2fpasswd"]


def attack_urls(lib: dict) -> list[str]:
    secret = str(lib["secret_dir"] / "secret.txt")
    values = [a.replace("{secret}", secret).replace("{secret_enc}", secret.replace("/", "%2f")) for a in ATTACKS]
    urls = [route.format(v) for route in ROUTES for v in values]
    urls += [f"/api/search?q={v}" for v in values] + [f"/api/images/1/thumbnail?v={v}" for v in values]
    urls += [f"/static/{v}" for v in values] + [f"/{v}" for v in values] + ["/static/../setup.cfg", "/static/"]
    return urls


def leaks(body: bytes) -> bool:
    return SECRET in body or b"root:x:0:0" in body or b"[fonts]" in body or b"[metadata]" in body


def test_traversal_corpus_never_yields_outside_bytes(lib):
    c = lib["client"]
    for url in attack_urls(lib):
        response = c.get(url)
        assert response.status_code < 500, (url, response.status_code, response.text)
        assert not leaks(response.content), url
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}, url


def test_symlink_swapped_in_after_indexing_is_not_followed_out(lib):
    c = lib["client"]
    from searchengine.library.api import Library

    victim = lib["photos"] / "extra11.jpg"
    target = next(h.id for h in Library.open(lib["library"]).search(text="x", limit=1000) if h.path == str(victim))
    saved = victim.read_bytes()
    info = victim.stat()
    try:
        for secret in ("secret.txt", "secret.png"):
            victim.unlink()
            victim.symlink_to(lib["secret_dir"] / secret)
            os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=True)
            for route in ROUTES:
                response = c.get(route.format(target))
                assert not leaks(response.content), route
                assert response.status_code in (200, 404), route
                if "file" in route or "thumbnail" in route or "preview" in route:
                    assert response.status_code == 404
    finally:
        victim.unlink()
        victim.write_bytes(saved)
        os.utime(victim, ns=(info.st_atime_ns, info.st_mtime_ns))


def library_files(library: Path) -> set[str]:
    return {str(p.relative_to(library)) for p in library.rglob("*") if p.name not in ("catalog.sqlite-shm",)}


def jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (100, 50, 20)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_uploads_are_capped_while_streaming(lib):
    c = client(lib["library"], max_upload_bytes=1 << 20)
    before = library_files(lib["library"])
    big = jpeg() + b"\0" * (2 << 20)
    response = c.post("/api/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and "error" in response.json()

    sent = []

    def chunks():  # no Content-Length: the cap must hold while the body streams in
        for _ in range(64):
            sent.append(1)
            yield b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n" + b"\0" * (256 << 10)

    response = c.post("/api/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "error" in response.json()
    lying = c.post("/api/search", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data; boundary=x",
                                                                "Content-Length": str(50 << 20)})
    assert lying.status_code == 413
    assert library_files(lib["library"]) == before


@pytest.mark.parametrize("name,data,status", [
    ("bomb.png", bomb_png(), 413),
    ("text.jpg", b"not an image at all", 415),
    ("empty.jpg", b"", 400),
    ("html.png", b"<html><script>alert(1)</script></html>", 415),
    ("truncated.jpg", jpeg((300, 200))[:200], 415),
])
def test_bad_uploads_are_refused(lib, name, data, status):
    before = library_files(lib["library"])
    response = lib["client"].post("/api/search", files={"image": (name, data, "image/jpeg")})
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    assert library_files(lib["library"]) == before


@pytest.mark.parametrize("body,headers", [
    ({"data": {"limit": "3"}}, {}),
    ({"content": b"{}"}, {"Content-Type": "application/json"}),
    ({"files": {"image": ("a.jpg", jpeg(), "image/jpeg")}, "data": {"limit": "0"}}, {}),
    ({"files": {"image": ("a.jpg", jpeg(), "image/jpeg")}, "data": {"offset": "x"}}, {}),
    ({"files": {"other": ("a.jpg", jpeg(), "image/jpeg")}}, {}),
])
def test_malformed_upload_requests_are_400(lib, body, headers):
    response = lib["client"].post("/api/search", headers=headers, **body)
    assert response.status_code == 400 and set(response.json()) == {"error"}, response.text


@pytest.mark.parametrize("host,allowed", [
    ("localhost", True), ("localhost:8765", True), ("127.0.0.1:8765", True), ("[::1]:8765", True),
    ("127.0.0.2", True), ("evil.example", False), ("evil.example:8765", False), ("localhost.evil.example", False),
    ("127.0.0.1.nip.io", False), ("192.168.1.10:8765", False), ("", False)])
def test_host_header_is_checked_on_loopback(lib, host, allowed):
    response = lib["client"].get("/api/status", headers={"Host": host})
    assert (response.status_code == 200) == allowed, (host, response.status_code)
    if not allowed:
        assert response.status_code == 403 and "error" in response.json()


def test_token_rules(lib):
    token = "s3cret-token"
    c = client(lib["library"], token=token, loopback=False)
    assert c.get("/api/status").status_code == 401
    assert c.get("/").status_code == 401
    assert c.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/status", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    assert c.get("/api/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert c.get("/api/status", headers={"Host": "photos.example.lan", "Authorization": f"Bearer {token}"}
                 ).status_code == 200  # off loopback the token is the guard, not the name
    assert c.get("/?token=nope", follow_redirects=False).status_code == 401
    opened = c.get(f"/?token={token}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == "/"
    assert "HttpOnly" in opened.headers["set-cookie"] and "SameSite=Strict" in opened.headers["set-cookie"]
    assert c.get("/api/status").status_code == 200  # the cookie now set in this client
    fresh = client(lib["library"], token=token, loopback=False)
    fresh.cookies.set("searchengine_token", "wrong")
    assert fresh.get("/api/status").status_code == 401


def test_token_needed_off_loopback(monkeypatch):
    monkeypatch.delenv("SEARCHENGINE_TOKEN", raising=False)
    assert resolve_token(ServeOptions(host="127.0.0.1")) == (None, False)
    token, generated = resolve_token(ServeOptions(host="0.0.0.0"))
    assert generated and len(token) >= 24
    assert resolve_token(ServeOptions(host="0.0.0.0", token="given")) == ("given", False)
    monkeypatch.setenv("SEARCHENGINE_TOKEN", "from-env")
    assert resolve_token(ServeOptions(host="192.168.0.2")) == ("from-env", False)
    assert all(is_loopback_host(h) for h in ("127.0.0.1", "::1", "localhost", "[::1]"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "192.168.0.2", "example.com", "::"))
