"""Playwright driving Debian's Chromium, headless (never a browser download), for the page's tests: the browser
and page fixtures (a module using them defines its own `site` fixture: the served library) and `flow`, which
saves a screenshot of a failing flow in the folder named in the failure message."""
from __future__ import annotations

import os
from contextlib import contextmanager

import pytest

CHROMIUM = os.environ.get("SEARCHENGINE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 30_000

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"{CHROMIUM} missing (apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


@contextmanager
def flow(page, site, name: str):
    """Run a flow; on failure leave a screenshot and say where."""
    try:
        yield
    except BaseException as exc:
        site["shots"].mkdir(parents=True, exist_ok=True)
        shot = site["shots"] / f"{name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
        except Exception:  # noqa: BLE001 - the original failure matters more
            pass
        raise AssertionError(f"{name} failed ({exc}); screenshot: {shot}") from exc
