"""Videos on the page, in Debian's Chromium (Playwright, headless): a video result's tile shows its frame with
a play badge and the moment's time; the large view plays the video from that moment in a `<video>` (fetched
with Range requests) and lists the video's moments, each a click that seeks; a format Chromium cannot play
(HEVC, AVI) or a file that fails shows the frame and a download link instead of a black box; "More like this"
works from a moment.

This Chromium (150, Debian) answers canPlayType: H.264 in MP4 "probably", VP9 in WebM "probably", AV1
"probably", HEVC "" (and video/x-msvideo "").
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from helpers.images import photo
from helpers.browser import browser, flow, needs_chromium, page  # noqa: F401 (fixtures)
from helpers.server import ServerProcess
from helpers.videos import make_video

pytestmark = needs_chromium

COLOURS = [(220, 40, 40), (40, 190, 60), (40, 60, 220), (230, 220, 50)]
SCENE_S = 3.0


def solid(rgb):
    return lambda t, size: np.full((size[1], size[0], 3), rgb, np.uint8)


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model_name):
    from searchengine.library.api import Library

    base = tmp_path_factory.mktemp("serve-video-browser")
    media = base / "media"
    media.mkdir()
    for k in range(2):
        photo(4000 + k, (320, 240)).save(media / f"photo{k}.jpg", quality=90)
    make_video(media / "colours.mp4", [(solid(c), SCENE_S) for c in COLOURS], fps=10, gop=10)
    make_video(media / "stripes.webm", [(1, 2.0), (2, 2.0)], codec="libvpx-vp9")
    make_video(media / "phone.mov", [(9, 2.0), (10, 2.0)], size=(120, 160), rotation=90)  # an iPhone's portrait
    make_video(media / "phone.mp4", [(3, 2.0), (4, 2.0)], codec="libx265")
    make_video(media / "old.avi", [(5, 2.0), (6, 2.0)], codec="mpeg4")
    make_video(media / "changed.mp4", [(7, 2.0), (8, 2.0)])
    library = base / "library"
    Library.open(library).index([str(media)], model=tiny_model_name)
    with open(media / "changed.mp4", "ab") as fh:  # changed since indexing: its file is a 404 now
        fh.write(b"\0" * 10)
    api = Library.open(library)
    from searchengine.query.filters import SearchFilters

    hits = api.search(text="x", limit=1000, moments=True, filters=SearchFilters(kind="video"))
    moments = {}
    for name in ("colours.mp4", "stripes.webm", "phone.mov", "phone.mp4", "old.avi", "changed.mp4"):
        first = next(h.id for h in hits if os.path.basename(h.path) == name)
        moments[name] = api.moments(first)
    server = ServerProcess(library)
    yield {"media": media, "library": library, "url": server.url, "moments": moments,
           "shots": base / "screenshots"}
    server.stop()


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def open_moment(page, site, moment_id: int) -> None:
    """Every moment of every video as a tile; click the one of `moment_id`."""
    page.goto(site["url"] + "?q=a%20colour&kind=video&moments=1")
    tile = f'#grid .tile[data-id="{moment_id}"]'
    page.wait_for_selector(tile)
    page.click(tile)
    page.wait_for_selector("#viewer", state="visible")


AT = """([start]) => {
  const p = document.getElementById('player');
  return !p.hidden && !p.error && p.readyState >= 2 && p.videoWidth > 0 && Math.abs(p.currentTime - start) < 0.5;
}"""


def test_a_video_tile_has_a_play_badge_and_its_time(page, site):
    with flow(page, site, "video-tile"):
        page.goto(site["url"] + "?q=a%20colour&moments=1")
        page.wait_for_selector("#grid .tile.video")
        for moment_id, start_s, _, _ in site["moments"]["colours.mp4"]:
            badge = page.text_content(f'#grid .tile[data-id="{moment_id}"] .badge')
            assert badge == f"\u25B6 {clock(start_s)}"
        thumb = f'#grid .tile[data-id="{site["moments"]["colours.mp4"][0][0]}"] img'
        page.wait_for_function(f"() => document.querySelector({thumb!r}).naturalWidth > 0")
        assert page.locator("#grid .tile:not(.video) .badge").count() == 0  # photos as before
        assert page.locator("#grid .tile:not(.video)").count() == 2


def test_large_view_plays_from_the_moment_and_moments_seek(page, site):
    moments = site["moments"]["colours.mp4"]
    assert len(moments) >= 2, moments
    later = max(moments, key=lambda m: m[1])
    with flow(page, site, "video-plays"):
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status) if r.url.endswith(f"/api/images/{later[0]}/file")
                else None)
        open_moment(page, site, later[0])
        assert page.evaluate("() => document.getElementById('player').getAttribute('preload')") == "metadata"
        page.wait_for_function(AT, arg=[later[1]])
        page.wait_for_function("([start]) => { const p = document.getElementById('player'); "
                               "return !p.paused && p.currentTime > start + 0.2; }", arg=[later[1]])  # it plays on
        assert page.is_hidden("#cannot-play") and page.is_hidden("#large")
        assert 206 in statuses  # Chromium fetched the video by Range requests
        page.wait_for_function(f"() => document.querySelectorAll('#moments .moment').length === {len(moments)}")
        page.wait_for_selector(f'#moments .moment[data-id="{later[0]}"][aria-current="true"]')
        first = min(moments, key=lambda m: m[1])
        page.click(f'#moments .moment[data-id="{first[0]}"]')
        page.wait_for_function(AT, arg=[first[1]])
        page.click(f'#moments .moment[data-id="{later[0]}"]')
        page.wait_for_function(AT, arg=[later[1]])
        assert "Moment" in page.text_content("#facts") and "H264" in page.text_content("#facts")
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer", state="hidden")
        assert page.evaluate("() => document.getElementById('player').getAttribute('src')") is None


@pytest.mark.parametrize("name", ["stripes.webm", "phone.mov"])
def test_vp9_webm_and_quicktime_play_too(page, site, name):
    moment_id, start_s, _, _ = site["moments"][name][-1]
    with flow(page, site, f"plays-{name}"):
        open_moment(page, site, moment_id)
        page.wait_for_function(AT, arg=[start_s])
        if name == "phone.mov":  # sent as video/quicktime, played upright
            size = page.evaluate("() => [document.getElementById('player').videoWidth, "
                                 "document.getElementById('player').videoHeight]")
            assert size == [120, 160]


@pytest.mark.parametrize("name", ["phone.mp4", "old.avi", "changed.mp4"])
def test_a_video_it_cannot_play_shows_its_frame_and_a_download_link(page, site, name):
    moment_id = site["moments"][name][0][0]
    with flow(page, site, f"cannot-play-{name}"):
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url) if r.url.endswith(f"/api/images/{moment_id}/file") else None)
        open_moment(page, site, moment_id)
        page.wait_for_selector("#cannot-play", state="visible")
        assert page.get_attribute("#download", "href") == f"/api/images/{moment_id}/file"
        assert page.get_attribute("#download", "download") == name
        assert page.is_hidden("#player")
        if name != "changed.mp4":  # HEVC and AVI: decided before loading anything; the frame is shown
            page.wait_for_function("() => document.getElementById('large').naturalWidth > 0")
            assert page.evaluate("() => document.getElementById('player').getAttribute('src')") is None
            assert not asked  # canPlayType said no: the video was never fetched
            assert ("HEVC" if name == "phone.mp4" else "AVI") in page.text_content("#cannot-play")
        else:  # an H.264 MP4 the player tried, and failed on (its file is a 404 now): its error event
            assert asked and "could not be played" in page.text_content("#cannot-play")


def test_more_like_this_from_a_moment(page, site):
    moments = site["moments"]["colours.mp4"]
    target = moments[-1][0]
    with flow(page, site, "video-similar"):
        page.goto(site["url"] + "?q=a%20colour")
        page.wait_for_selector("#grid .tile.video")
        ids = page.eval_on_selector_all("#grid .tile.video", "ts => ts.map((t) => Number(t.dataset.id))")
        shown = next(i for i in ids if i in {m[0] for m in moments})  # the video once, at its best moment
        page.click(f'#grid .tile[data-id="{shown}"]')
        page.wait_for_selector("#viewer", state="visible")
        page.wait_for_function("() => document.querySelectorAll('#moments .moment').length > 1")
        page.click(f'#moments .moment[data-id="{target}"]')
        page.wait_for_selector(f'#moments .moment[data-id="{target}"][aria-current="true"]')
        page.click("#similar")
        page.wait_for_function(f"() => location.search === '?similar={target}'")
        page.wait_for_function("() => /^photos like #/.test(document.getElementById('message').textContent) && "
                               "document.querySelectorAll('#grid .tile').length > 0")
        ids = page.eval_on_selector_all("#grid .tile", "ts => ts.map((t) => Number(t.dataset.id))")
        assert ids and not set(ids) & {m[0] for m in moments}  # its own video is no news
