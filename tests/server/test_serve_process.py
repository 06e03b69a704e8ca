"""`searchengine serve` as a process: URL, port in use, Ctrl-C, streaming cap on a real socket, --watch;
thumbnails made by `index`; `index` without PATH re-indexing the remembered folders."""
from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers.cli import run
from helpers.images import photo
from helpers.server import ServerProcess, build_library, client
from indexer.images.thumbnails import THUMBNAIL_DIR


@pytest.fixture(scope="module")
def lib(tmp_path_factory, tiny_model_name) -> dict:
    base = tmp_path_factory.mktemp("serve-process")
    photos, library = build_library(base, tiny_model_name)
    return {"photos": photos, "library": library}


def fetch_json(url: str, headers: dict | None = None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
        return json.loads(response.read())


def test_serve_prints_url_answers_and_exits_0_on_ctrl_c(lib):
    server = ServerProcess(lib["library"])
    try:
        assert server.url.startswith("http://localhost:")
        assert fetch_json(server.url + "api/status")["images"] > 0
        assert fetch_json(server.url + "api/search?q=a&limit=3")["results"]
    finally:
        code = server.stop()
    stderr = server.proc.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_port_in_use_is_one_line(lib):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run("serve", "--library", lib["library"], "--port", port, ok=False)
    assert result.exit_code != 0
    assert result.stderr.strip().count("\n") == 0 and f"port {port} is already in use" in result.stderr


def test_no_library_is_one_line(tmp_path):
    result = run("serve", "--library", tmp_path / "none", "--port", "0", ok=False)
    assert result.exit_code != 0 and "no library" in result.stderr and "Traceback" not in result.output


def test_token_is_required_and_never_logged(lib):
    token = "tok-" + "9" * 30
    server = ServerProcess(lib["library"], "--token", token)
    try:
        assert token not in server.url
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch_json(server.url + "api/status")
        assert refused.value.code == 401
        assert fetch_json(server.url + "api/status", {"Authorization": f"Bearer {token}"})["images"] > 0
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + f"?token={token}x", timeout=30)
    finally:
        assert server.stop() == 0
    assert token not in server.proc.stderr.read()


def test_upload_cap_holds_on_a_real_socket(lib):
    """A body far over the cap is answered 413 long before it has all been sent."""
    server = ServerProcess(lib["library"], "--max-upload-mb", "1")
    try:
        host, port = server.url.split("//")[1].rstrip("/").split(":")
        with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as conn:
            conn.sendall(b"POST /api/search HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                         b"Content-Type: multipart/form-data; boundary=x\r\n\r\n")
            head = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
                    b"Content-Type: image/jpeg\r\n\r\n")
            conn.sendall(b"%x\r\n" % len(head) + head + b"\r\n")
            chunk = b"\0" * (256 << 10)
            sent = 0
            answer = b""
            conn.settimeout(0.05)
            for _ in range(400):  # up to 100 MB, stopped as soon as the server answers
                try:
                    conn.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    sent += len(chunk)
                    answer += conn.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if answer:
                    break
            conn.settimeout(10)
            try:
                answer += conn.recv(4096)
            except OSError:
                pass
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 20 << 20
    finally:
        server.stop()


def test_index_makes_thumbnails_by_content_hash(tmp_path, tiny_model_name):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        photo(k, (800, 600)).save(photos / f"p{k}.jpg")
    library = tmp_path / "lib"
    run("index", photos, "--library", library, "--model", tiny_model_name)
    thumbs = sorted((library / THUMBNAIL_DIR).rglob("*.jpg"))
    assert len(thumbs) == 3 and all(t.parent.name == t.name[:2] for t in thumbs)
    from PIL import Image

    assert {Image.open(t).size for t in thumbs} == {(320, 240)}
    shutil.copy(photos / "p0.jpg", photos / "copy.jpg")
    (photos / "p1.jpg").rename(photos / "renamed.jpg")
    stamp = {t: t.stat().st_mtime_ns for t in thumbs}
    run("index", photos, "--library", library)
    after = sorted((library / THUMBNAIL_DIR).rglob("*.jpg"))
    assert after == thumbs and {t: t.stat().st_mtime_ns for t in after} == stamp


def test_older_libraries_get_thumbnails_on_first_request(tmp_path, tiny_model_name):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo(7, (1000, 500)).save(photos / "wide.jpg")
    library = tmp_path / "lib"
    run("index", photos, "--library", library, "--model", tiny_model_name)
    shutil.rmtree(library / THUMBNAIL_DIR)
    c = client(library)
    hit = c.get("/api/search?q=a").json()["results"][0]
    first = c.get(hit["thumbnail"])
    assert first.status_code == 200 and len(list((library / THUMBNAIL_DIR).rglob("*.jpg"))) == 1
    assert c.get(hit["thumbnail"]).content == first.content


def test_index_without_path_reindexes_remembered_roots(tmp_path, tiny_model_name):
    photos, other = tmp_path / "photos", tmp_path / "other"
    for folder in (photos, other):
        (folder / "skip").mkdir(parents=True)
    photo(1).save(photos / "a.png")
    photo(2).save(photos / "skip" / "b.png")
    photo(3).save(other / "c.png")
    photo(5).save(other / "skip" / "d.png")  # other was indexed without the exclude
    library = str(tmp_path / "lib")
    run_json = lambda *a: json.loads(run(*a, "--library", library, "--json").stdout)  # noqa: E731
    assert run_json("index", str(photos), "--exclude", "skip", "--model", tiny_model_name)["added"] == 1
    assert run_json("index", str(other))["added"] == 2
    photo(4).save(photos / "new.png")
    (other / "c.png").unlink()
    summary = run_json("index")
    assert (summary["added"], summary["removed"]) == (1, 1)  # photos' exclude still applies: skip/b.png stays out
    assert run_json("status")["images"] == 3
    empty = run("index", "--library", tmp_path / "nothing", ok=False)
    assert empty.exit_code != 0 and "Traceback" not in empty.output


def wait_for(predicate, timeout: float = 90.0, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def test_watch_picks_up_a_new_video(tmp_path, tiny_model_name):
    from helpers.videos import make_video

    media = tmp_path / "media"
    media.mkdir()
    photo(1).save(media / "p1.png")
    library = tmp_path / "lib"
    run("index", media, "--library", library, "--model", tiny_model_name, "--workers", "0")
    server = ServerProcess(library, "--watch")
    try:
        status = lambda: fetch_json(server.url + "api/status")  # noqa: E731
        wait_for(lambda: fetch_json(server.url + "api/indexing")["watching"])
        make_video(tmp_path / "clip.mp4", [(1, 2.0), (5, 2.0)])
        (tmp_path / "clip.mp4").rename(media / "clip.mp4")  # appears whole, as a finished copy does
        wait_for(lambda: status()["videos"] == 1)
        assert status()["segments"] >= 1 and status()["images"] == 1
        hits = fetch_json(server.url + "api/search?q=a&limit=10&kind=video")["results"]
        assert [h["path"] for h in hits] == [str(media / "clip.mp4")] and hits[0]["kind"] == "video"
    finally:
        assert server.stop() == 0


def test_watch_adds_and_removes_without_restart(tmp_path, tiny_model_name):
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        photo(k).save(photos / f"p{k}.png")
    library = tmp_path / "lib"
    run("index", photos, "--library", library, "--model", tiny_model_name, "--workers", "0")
    server = ServerProcess(library, "--watch")
    try:
        count = lambda: fetch_json(server.url + "api/status")["images"]  # noqa: E731
        wait_for(lambda: fetch_json(server.url + "api/indexing")["watching"])
        photo(50, (300, 200)).save(photos / "added.jpg")
        wait_for(lambda: count() == 4)
        hits = fetch_json(server.url + "api/search?q=a&limit=10")["results"]
        assert any(h["path"].endswith("added.jpg") for h in hits)
        (photos / "p0.png").unlink()
        wait_for(lambda: count() == 3)
        paths = [h["path"] for h in fetch_json(server.url + "api/search?q=a&limit=10")["results"]]
        assert not any(p.endswith("p0.png") for p in paths)
    finally:
        assert server.stop() == 0
