"""The page in a real browser: Playwright driving Debian's Chromium, headless (no browser download).

Each flow saves a screenshot when it fails, in a folder named in the failure message.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.browser import TIMEOUT_MS, browser, flow, needs_chromium, page  # noqa: F401 (fixtures)
from helpers.server import ServerProcess, build_library

pytestmark = needs_chromium

ALL_VISIBLE_DECODED = """() => {
  const imgs = [...document.querySelectorAll('#grid img')].filter((img) => {
    const r = img.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight && r.width > 0;
  });
  return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model_name):
    base = tmp_path_factory.mktemp("serve-browser")
    photos, library = build_library(base, tiny_model_name)
    server = ServerProcess(library)
    yield {"photos": photos, "library": library, "url": server.url, "shots": base / "screenshots"}
    server.stop()


def search(page, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_function(f"() => location.search === '?q={text.replace(' ', '%20')}'")
    page.wait_for_selector("#grid .tile img")
    page.wait_for_function(ALL_VISIBLE_DECODED)


def first_href(page) -> str:
    return page.get_attribute("#grid .tile:first-child", "href")


def id_of(site, name: str) -> int:
    from searchengine.library.api import Library

    return next(h.id for h in Library.open(site["library"]).search(text="x", limit=1000)
                if os.path.basename(h.path) == name)


def test_text_query_shows_decoded_thumbnails(page, site):
    with flow(page, site, "text-query"):
        page.goto(site["url"])
        page.wait_for_function("() => /images/.test(document.getElementById('status').textContent)")
        search(page, "a red bicycle")
        assert page.locator("#grid .tile").count() >= 20
        score = page.locator("#grid .tile:first-child .score")
        page.hover("#grid .tile:first-child")
        page.wait_for_function("() => getComputedStyle(document.querySelector('#grid .tile .score')).opacity === '1'")
        assert float(score.text_content()) > 0


def test_large_view_and_more_like_this(page, site):
    with flow(page, site, "large-view"):
        page.goto(site["url"] + "?q=sunset")
        page.wait_for_function(ALL_VISIBLE_DECODED)
        clicked = page.get_attribute("#grid .tile >> nth=2", "href")
        page.click("#grid .tile >> nth=2")
        page.wait_for_selector("#viewer", state="visible")
        page.wait_for_function("() => document.getElementById('large').naturalWidth > 0")
        path = page.text_content("#path")
        assert path.startswith(str(site["photos"]))
        assert "Score" in page.text_content("#facts")
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => document.getElementById('path').textContent !== {path!r}")
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(f"() => document.getElementById('path').textContent === {path!r}")
        assert page.get_attribute("#original", "href") == clicked
        page.click("#similar")
        image_id = clicked.split("/")[3]
        page.wait_for_function(f"() => location.search === '?similar={image_id}'")
        page.wait_for_function(f"() => document.querySelector('#grid .tile') && "
                               f"document.querySelector('#grid .tile').getAttribute('href') === {clicked!r}")
        page.wait_for_function(ALL_VISIBLE_DECODED)
        page.click("#grid .tile >> nth=0")
        page.wait_for_selector("#viewer", state="visible")
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer", state="hidden")


def test_choosing_an_image_file_searches_by_it(page, site):
    with flow(page, site, "search-by-file"):
        page.goto(site["url"])
        target = site["photos"] / "extra04.jpg"
        page.set_input_files("#pick", str(target))
        expected = f"/api/images/{id_of(site, 'extra04.jpg')}/file"
        page.wait_for_function(f"() => document.querySelector('#grid .tile') && "
                               f"document.querySelector('#grid .tile').getAttribute('href') === {expected!r}")
        page.wait_for_function(ALL_VISIBLE_DECODED)
        assert page.locator("#grid .tile").count() >= 10


def test_back_restores_previous_results(page, site):
    with flow(page, site, "back"):
        page.goto(site["url"])
        search(page, "mountains")
        before = [page.get_attribute(f"#grid .tile >> nth={k}", "href") for k in range(5)]
        search(page, "a cat asleep")
        page.go_back()
        page.wait_for_function("() => location.search === '?q=mountains'")
        page.wait_for_function(f"() => document.querySelector('#grid .tile') && "
                               f"document.querySelector('#grid .tile').getAttribute('href') === {before[0]!r}")
        assert [page.get_attribute(f"#grid .tile >> nth={k}", "href") for k in range(5)] == before
        assert page.input_value("#q") == "mountains"


def test_phone_viewport_has_no_horizontal_scroll(browser, site):
    context = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        with flow(page, site, "phone"):
            page.goto(site["url"] + "?q=beach")
            page.wait_for_function(ALL_VISIBLE_DECODED)
            no_scroll = "() => document.documentElement.scrollWidth <= window.innerWidth"
            assert page.evaluate(no_scroll)
            page.click("#grid .tile >> nth=0")
            page.wait_for_function("() => document.getElementById('large').naturalWidth > 0")
            assert page.evaluate(no_scroll)
            box = page.locator("#similar").bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360
    finally:
        context.close()


def test_first_screen_loads_at_once_and_status_waits_for_the_answer(browser, site):
    """Opening `/?q=...`: the search is asked before the status line's counts, the tiles on the first screen load
    eagerly (lazy below), and every thumbnail's paint is reported to the Performance API (Element Timing)."""
    context = browser.new_context(viewport={"width": 800, "height": 450})
    page = context.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url.split("/", 3)[3]) if "/api/" in r.url else None)
    page.add_init_script("""window.__painted = 0; new PerformanceObserver((l) => { window.__painted +=
        l.getEntries().filter((e) => e.identifier === "thumbnail").length; }).observe({type: "element", buffered: true});""")
    with flow(page, site, "first-screen"):
        page.goto(site["url"] + "?q=a%20photo")
        page.wait_for_function(ALL_VISIBLE_DECODED)
        page.wait_for_function("() => /images/.test(document.getElementById('status').textContent)")
        apis = [a for a in asked if a.startswith("api/search") or a.startswith("api/status")]
        assert apis[0].startswith("api/search") and "api/status" in apis
        loading = page.eval_on_selector_all("#grid img", "imgs => imgs.map((i) => i.loading)")
        eager = (800 // 150 + 1) * (450 // 150)  # the page's own estimate: ceil(800 / 150) * ceil(450 / 150)
        assert loading[:eager] == ["eager"] * eager and set(loading[eager:]) <= {"lazy"}
        assert page.evaluate("window.__painted") >= 1
    context.close()
