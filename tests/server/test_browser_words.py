"""The words read in pictures on the page, in Debian's Chromium (Playwright, headless): the search box's "Words"
toggle (kept in the URL), the matching lines' boxes drawn over the large view's picture (a photo's preview, or a
video paused in its moment), the full text beside it with its matching lines marked, and its copy button."""
from __future__ import annotations

import importlib.util
import os

import pytest

from helpers.browser import TIMEOUT_MS, browser, flow, needs_chromium, page  # noqa: F401 (fixtures)
from helpers.server import ServerProcess, build_words_library

pytestmark = [needs_chromium, pytest.mark.skipif(importlib.util.find_spec("rapidocr_onnxruntime") is None,
                                                reason="the ocr extra: pip install 'searchengine[ocr]'")]

TILES_DECODED = """() => {
  const imgs = [...document.querySelectorAll('#grid .tile img')];
  return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
}"""
# Each box of the overlay on screen, and the picture's rectangle (the preview, or the video's picture in its player)
BOXES = """() => {
  const large = document.getElementById('large'), player = document.getElementById('player');
  let r = (large.hidden ? player : large).getBoundingClientRect();
  if (large.hidden) {
    const s = Math.min(r.width / player.videoWidth, r.height / player.videoHeight);
    const w = player.videoWidth * s, h = player.videoHeight * s;
    r = {x: r.x + (r.width - w) / 2, y: r.y + (r.height - h) / 2, width: w, height: h};
  }
  const boxes = [...document.querySelectorAll('#boxes polygon')].map((p) => {
    const b = p.getBoundingClientRect();
    return [b.x, b.y, b.width, b.height];
  });
  return {picture: [r.x, r.y, r.width, r.height], boxes};
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model_name):
    from searchengine.library.api import Library

    base = tmp_path_factory.mktemp("browser-words")
    photos, library = build_words_library(base, tiny_model_name)
    api = Library.open(library)
    hits = api.search(text="x", limit=100, words=False, moments=True)
    ids = {os.path.basename(h.path): h.id for h in hits if not h.start_s}  # a video: its first moment, PLATFORM 9
    lines = {name: api.text_lines(image_id) for name, image_id in ids.items()}
    server = ServerProcess(library)
    yield {"photos": photos, "library": library, "url": server.url, "ids": ids, "lines": lines,
           "shots": base / "screenshots"}
    server.stop()


def tile_ids(page) -> list[int]:
    return page.eval_on_selector_all("#grid .tile", "ts => ts.map((t) => Number(t.dataset.id))")


def expected_box(site, name: str, text: str, picture: list[float]) -> list[float]:
    """Where the line `text` of picture `name` lies on screen: its fractional box over the picture's rectangle."""
    line = next(line for line in site["lines"][name] if line.text == text)
    xs, ys = [x for x, _ in line.box], [y for _, y in line.box]
    left, top, width, height = picture
    return [left + min(xs) * width, top + min(ys) * height, (max(xs) - min(xs)) * width, (max(ys) - min(ys)) * height]


def test_words_toggle_finds_the_picture_and_stays_in_the_url(page, site):
    with flow(page, site, "words-toggle"):
        page.goto(site["url"])
        page.wait_for_function("() => /images/.test(document.getElementById('status').textContent)")
        page.fill("#q", "boarding")
        page.check("#words")
        page.press("#q", "Enter")
        page.wait_for_function("() => location.search === '?words=boarding'")
        page.wait_for_function("() => /the words/.test(document.getElementById('message').textContent)")
        page.wait_for_function(TILES_DECODED)
        assert tile_ids(page) == [site["ids"]["pass.png"]]
        assert page.locator("#grid .tile .score").count() == 0  # newest first: no score to show
        assert "Gate 12 Seat 4A" not in page.get_attribute("#grid .tile", "title")
        assert "BOARDING PASS" in page.get_attribute("#grid .tile", "title")  # the line that matched
        page.reload()
        page.wait_for_function(TILES_DECODED)
        assert page.is_checked("#words") and page.input_value("#q") == "boarding"
        assert tile_ids(page) == [site["ids"]["pass.png"]]
        page.uncheck("#words")  # the same text, searched again by CLIP and the words together
        page.wait_for_function("() => location.search === '?q=boarding'")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 6")
        assert tile_ids(page)[0] == site["ids"]["pass.png"]
        page.go_back()
        page.wait_for_function("() => location.search === '?words=boarding'")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 1")
        assert page.is_checked("#words")


def test_large_view_draws_the_matching_line_and_copies_the_text(browser, site):
    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        with flow(page, site, "words-large-view"):
            page.goto(site["url"] + "?words=gate")
            page.wait_for_function(TILES_DECODED)
            assert set(tile_ids(page)) == {site["ids"]["pass.png"], site["ids"]["coffee.jpg"]}
            page.click(f'#grid .tile[data-id="{site["ids"]["pass.png"]}"]')
            page.wait_for_selector("#viewer", state="visible")
            page.wait_for_selector("#boxes polygon")
            drawn = page.evaluate(BOXES)
            assert len(drawn["boxes"]) == 1  # "Gate 12 Seat 4A", not "BOARDING PASS"
            assert drawn["boxes"][0] == pytest.approx(expected_box(site, "pass.png", "Gate 12 Seat 4A",
                                                                   drawn["picture"]), abs=3)
            page.wait_for_selector("#text-box", state="visible")
            assert page.text_content("#text mark") == "Gate 12 Seat 4A"
            assert page.inner_text("#text") == "BOARDING PASS\nGate 12 Seat 4A"
            page.click("#copy-text")
            page.wait_for_function("() => document.getElementById('copy-text').textContent === 'Copied'")
            assert page.evaluate("() => navigator.clipboard.readText()") == "BOARDING PASS\nGate 12 Seat 4A"
            page.set_viewport_size({"width": 600, "height": 900})  # the boxes follow the picture's new size
            page.wait_for_function("([w]) => document.getElementById('large').getBoundingClientRect().width < w",
                                   arg=[drawn["picture"][2]])
            page.wait_for_timeout(200)
            smaller = page.evaluate(BOXES)
            assert smaller["boxes"][0] == pytest.approx(expected_box(site, "pass.png", "Gate 12 Seat 4A",
                                                                     smaller["picture"]), abs=3)
            first = tile_ids(page)[0] == site["ids"]["pass.png"]
            page.keyboard.press("ArrowRight" if first else "ArrowLeft")  # the other hit: its own line
            page.wait_for_function("() => document.getElementById('text').textContent.includes('coffee')")
            page.wait_for_function("() => document.querySelectorAll('#boxes polygon').length === 1 && "
                                   "document.querySelector('#boxes title').textContent === 'Gate opens at noon'")
            assert page.text_content("#copy-text") == "Copy text"
    finally:
        context.close()
    assert not errors, errors


def test_no_text_no_boxes_and_a_text_query_without_words(page, site):
    with flow(page, site, "words-none"):
        page.goto(site["url"] + "?q=a%20red%20bicycle")  # no word of it in any picture
        page.wait_for_function(TILES_DECODED)
        page.click(f'#grid .tile[data-id="{site["ids"]["plain0.jpg"]}"]')
        page.wait_for_function("() => document.getElementById('large').naturalWidth > 0")
        page.wait_for_function("() => /Format/.test(document.getElementById('facts').textContent)")
        assert page.is_hidden("#text-box") and page.locator("#boxes polygon").count() == 0
        page.click("#close")
        page.click(f'#grid .tile[data-id="{site["ids"]["pass.png"]}"]')
        page.wait_for_selector("#text-box", state="visible")  # its text, though this query used no words of it
        assert page.locator("#text mark").count() == 0 and page.locator("#boxes polygon").count() == 0


def test_a_video_moment_shows_its_boxes_while_paused_in_it(page, site):
    with flow(page, site, "words-video"):
        page.goto(site["url"] + "?words=platform")
        page.wait_for_selector("#grid .tile.video")
        page.click(f'#grid .tile[data-id="{site["ids"]["station.mp4"]}"]')
        page.wait_for_selector("#viewer", state="visible")
        page.wait_for_selector("#text-box", state="visible")
        assert page.text_content("#text mark") == "PLATFORM 9"
        page.wait_for_function("() => document.getElementById('player').readyState >= 2")
        page.evaluate("() => { const p = document.getElementById('player'); p.pause(); p.currentTime = 0.5; }")
        page.wait_for_selector("#boxes polygon")
        drawn = page.evaluate(BOXES)
        assert len(drawn["boxes"]) == 1
        assert drawn["boxes"][0] == pytest.approx(expected_box(site, "station.mp4", "PLATFORM 9", drawn["picture"]),
                                                  abs=3)
        page.evaluate("() => document.getElementById('player').play()")  # the picture moves on: no boxes
        page.wait_for_function("() => document.getElementById('boxes').hasAttribute('hidden')")
        page.evaluate("() => { const p = document.getElementById('player'); p.pause(); p.currentTime = 3; }")
        page.wait_for_function("() => document.getElementById('text-box').hidden")  # the next moment: no text
        assert page.get_attribute("#boxes", "hidden") is not None
