"""Near-duplicate groups: planted copies of real photos (tiny model), and planted vectors on flat and IVF indexes."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers.cli import run
from helpers.synthetic import planted_library, unit
from indexer.catalog.store import Catalog
from indexer.vectors.index import FLAT, IVF_SQ8, VectorIndex
from searchengine.query.duplicates import find_duplicates
from searchengine.query.expression import IMAGE, Term
from searchengine.library.api import Library

skimage_data = pytest.importorskip("skimage.data")

# Real photos the tiny random-weight model keeps apart (measured: pairwise cosine <= 0.972, a copy to another
# photo <= 0.980) while each copy stays >= 0.9937 to its original; asserted below before anything else.
PHOTOS = ["astronaut", "rocket", "coins", "grass", "moon", "logo", "coffee", "clock", "horse", "hubble_deep_field"]
THRESHOLD = 0.99


def load_photo(name: str) -> Image.Image:
    pixels = getattr(skimage_data, name)()
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    return Image.fromarray(pixels[..., :3] if pixels.ndim == 3 else pixels).convert("RGB")


def plant(folder) -> dict[str, list]:
    """Each photo as PNG plus three copies: resized to 50%, JPEG quality 60, cropped by 2% on each side."""
    groups = {}
    for name in PHOTOS:
        img = load_photo(name)
        w, h = img.size
        (folder / name).mkdir(parents=True)
        img.save(folder / name / "original.png")
        img.resize((w // 2, h // 2), Image.Resampling.LANCZOS).save(folder / name / "half.jpg", quality=90)
        img.save(folder / name / "q60.jpg", quality=60)
        dx, dy = round(w * 0.02), round(h * 0.02)
        img.crop((dx, dy, w - dx, h - dy)).save(folder / name / "crop.jpg", quality=90)
        groups[name] = sorted(str(p) for p in (folder / name).iterdir())
    return groups


@pytest.fixture
def planted_photos(isolated, tiny_model_name):
    groups = plant(isolated / "photos")
    shutil.copy(isolated / "photos" / "moon" / "original.png", isolated / "photos" / "moon-again.png")
    groups["moon"].append(str(isolated / "photos" / "moon-again.png"))
    run("index", isolated / "photos", "--model", tiny_model_name, "--json")
    return groups


def test_each_copy_joins_its_original_and_distinct_photos_stay_apart(planted_photos):
    library = Library.open()
    vectors = {p: library.query_vector([Term(IMAGE, p)]) for ps in planted_photos.values() for p in ps}
    same = min(float(vectors[a] @ vectors[b]) for ps in planted_photos.values() for a in ps for b in ps)
    apart = max(float(vectors[a] @ vectors[b]) for n, ps in planted_photos.items() for a in ps
                for m, qs in planted_photos.items() if m != n for b in qs)
    assert apart < THRESHOLD - 0.004 and same > THRESHOLD + 0.002, (apart, same)  # the test set is separable
    groups = json.loads(run("duplicates", "--threshold", str(THRESHOLD), "--json").stdout)
    found = sorted(sorted(i["path"] for i in g["images"]) for g in groups)
    assert found == sorted(sorted(ps) for ps in planted_photos.values())
    moon = next(g for g in groups if any(i["path"].endswith("moon-again.png") for i in g["images"]))
    assert len(moon["images"]) == 5 and not moon["identical"]
    first = groups[0]
    assert len(first["images"]) == 5 and first["images"][0]["width"] in (None, 512)  # largest first
    for group in groups:
        assert set(group["images"][0]) >= {"path", "size", "width", "height", "taken_at", "modified"}
        sizes = [(i["width"] or 0) * (i["height"] or 0) for i in group["images"]]
        assert sizes == sorted(sizes, reverse=True)
        assert THRESHOLD <= group["similarity"] <= 1.0


def test_identical_files_group_whatever_the_threshold(planted_photos, isolated):
    groups = json.loads(run("duplicates", "--threshold", "1", "--json").stdout)
    assert len(groups) == 1 and groups[0]["identical"] and groups[0]["similarity"] == 1.0
    assert sorted(i["path"] for i in groups[0]["images"]) == sorted(
        [str(isolated / "photos" / "moon" / "original.png"), str(isolated / "photos" / "moon-again.png")])
    plain = run("duplicates", "--threshold", "1").stdout.splitlines()
    assert plain[0].startswith("# group 1: 2 images, identical") and len(plain) == 3
    assert plain[1].split("\t")[-1].endswith(".png")


@pytest.mark.parametrize("value", ["0", "1.5", "x"])
def test_bad_threshold_is_one_line(value, isolated):
    result = run("duplicates", "--threshold", value, ok=False)
    assert result.exit_code != 0 and "--threshold" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def brute_force_groups(vectors: np.ndarray, ids: list[int], threshold: float) -> list[list[int]]:
    """Reference: connected components of the all-pairs graph (small sizes only)."""
    similar = vectors @ vectors.T >= threshold
    seen, out = set(), []
    for start in range(len(ids)):
        if start in seen:
            continue
        component, stack = {start}, [start]
        while stack:
            for nxt in np.nonzero(similar[stack.pop()])[0]:
                if int(nxt) not in component:
                    component.add(int(nxt))
                    stack.append(int(nxt))
        seen |= component
        if len(component) > 1:
            out.append(sorted(ids[i] for i in component))
    return sorted(out)


@pytest.mark.parametrize("kind", [FLAT, IVF_SQ8])
def test_range_search_groups_equal_brute_force(isolated, kind):
    rng = np.random.default_rng(3)
    dim, n = 64, 4000
    base = unit(rng.normal(size=dim) * 2 + rng.normal(size=(n, dim)))
    copies = unit(base[:150] + rng.normal(size=(150, dim)) * rng.uniform(0.01, 0.04, (150, 1)))
    vectors = np.concatenate([base, copies, base[150:160]])  # 10 exact copies too
    ids = planted_library(isolated / "lib", vectors)
    catalog = Catalog.open(isolated / "lib" / "catalog.sqlite", writable=False)
    index = VectorIndex.build(dim, np.array(ids), vectors, kind=kind)
    assert index.kind == kind
    for threshold in (0.98, 0.995):
        groups = find_duplicates(catalog, index, threshold)
        found = sorted(sorted(i.id for i in g.images) for g in groups)
        assert found == brute_force_groups(vectors, ids, threshold)
    groups = find_duplicates(catalog, index, 0.98)
    assert sum(g.identical for g in groups) == 10
    assert all(0.98 <= g.similarity <= 1.0 for g in groups)
    catalog.close()


def test_a_library_without_a_usable_index_still_answers(isolated, monkeypatch):
    rng = np.random.default_rng(5)
    base = unit(rng.normal(size=(300, 32)))
    vectors = np.concatenate([base, unit(base[:20] + 0.01 * rng.normal(size=(20, 32)))])
    ids = planted_library(isolated / "lib", vectors)
    library = Library.open(isolated / "lib", notice=lambda m: None)
    expected = sorted(sorted(i.id for i in g.images) for g in library.duplicates(0.99))
    assert expected == brute_force_groups(vectors, ids, 0.99) and len(expected) == 20
    fresh = Library.open(isolated / "lib", notice=lambda m: None)
    monkeypatch.setattr(fresh, "_readable_index", lambda: None)  # what a large library with a damaged file gets
    assert sorted(sorted(i.id for i in g.images) for g in fresh.duplicates(0.99)) == expected
