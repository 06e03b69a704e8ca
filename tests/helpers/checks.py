"""What a whole library must answer: every readable file exactly once, and a first hit that wins on its score."""
from __future__ import annotations

from pathlib import Path


def status_images(library: Path) -> int:
    from searchengine.library.api import Library

    lib = Library.open(library, notice=lambda _: None)
    try:
        return lib.status().images
    finally:
        lib.close()


def check_complete(library: Path, files: list[Path], failed: int) -> None:
    """Every readable file exactly once: counts, listings and image-to-itself search."""
    from searchengine.library.api import Library

    notices: list[str] = []
    lib = Library.open(library, notice=notices.append)
    try:
        status = lib.status()
        assert (status.images, status.failed) == (len(files), failed)
        listed = [h.path for h in lib.search(text="a photo", limit=1000)]
        assert len(listed) == len(set(listed)), "a path appears twice"
        assert sorted(listed) == sorted(map(str, files))
        for path in files:
            hits = lib.search(image=str(path), limit=3)
            assert hits[0].path == str(path), (path, hits)
            assert len({h.path for h in hits}) == len(hits)
    finally:
        lib.close()


def assert_clear_winner(hits: list[dict]) -> None:
    """The first hit wins on its score, not on tie order: its lead over the runner-up is a real share of the
    runner-up's distance from a perfect match (a random model makes photos alike, so near-ties happen)."""
    first, second = hits[0]["score"], hits[1]["score"]
    assert first - second > 0.2 * (1 - second), (first, second)
