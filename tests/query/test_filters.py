"""Search filters: parsing, SQL semantics, and filtered top-k against brute force over the matching images."""
from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

import indexer.vectors.index as vector_index
import searchengine.query.filtered as filtered
import searchengine.query.filters as filters_module
from helpers.cli import run
from indexer.catalog.store import BatchWrite, Catalog, StoredImage
from indexer.catalog.matching import distance_km
from indexer.images.metadata import ImageMetadata
from searchengine.query.filters import FilterError, Near, SearchFilters
from searchengine.library.api import Library

DIM = 32
N = 3000
# Search skips results whose files are gone, so the synthetic images are empty files under one temporary root.
ROOT = os.fsencode(tempfile.mkdtemp(prefix="searchengine-filters-"))
atexit.register(shutil.rmtree, ROOT, True)
FOLDERS = [ROOT + f for f in (b"/p/a", b"/p/a/sub", b"/p/ab", b"/p/b/deep/er", b"/q")]
CAMERAS = [("Canon", "Canon EOS R5"), ("NIKON CORPORATION", "NIKON D750"), ("Apple", "iPhone 13"), (None, None)]
FORMATS = ["jpeg", "png", "heic"]
PARIS = (48.8566, 2.3522)


def synthetic_metadata(rng: np.random.Generator, n: int) -> list[tuple[bytes, ImageMetadata]]:
    rows = []
    for k in range(n):
        make, model = CAMERAS[int(rng.integers(len(CAMERAS)))]
        w, h = [(4000, 3000), (3000, 4000), (2000, 2000)][int(rng.integers(3))]
        place = rng.random()
        if place < 0.3:  # around Paris, up to ~3 km away
            lat, lon = PARIS[0] + rng.normal(0, 0.015), PARIS[1] + rng.normal(0, 0.02)
        elif place < 0.6:
            lat, lon = rng.uniform(-89, 89), rng.uniform(-180, 180)
        else:
            lat = lon = None
        taken = None if k % 97 == 0 else float(rng.uniform(946684800, 1735689600))  # 2000 .. 2025
        meta = ImageMetadata(taken_at=taken, taken_at_local=None, taken_at_source="exif" if taken else None,
                             width=w, height=h, format=FORMATS[int(rng.integers(3))], make=make, model=model,
                             latitude=lat, longitude=lon)
        folder = FOLDERS[int(rng.integers(len(FOLDERS)))]
        rows.append((folder + b"/img%05d.jpg" % k, meta))
    return rows


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_library(folder: Path, rows: list[tuple[bytes, ImageMetadata]],
                 vectors: np.ndarray | None = None) -> tuple[Library, dict]:
    """A library of synthetic rows (no model needed for vector queries); returns it and id -> (vector, path, meta)."""
    folder.mkdir(parents=True, exist_ok=True)
    vectors = unit_vectors(len(rows)) if vectors is None else vectors
    for path, _ in rows:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "ab").close()
    catalog = Catalog.create(folder / "catalog.sqlite", {"model": "synthetic", "pretrained": "", "dim": str(DIM)})
    for start in range(0, len(rows), 500):
        batch = BatchWrite(stored=[StoredImage(path, 1, 1, os.urandom(16), vectors[start + k], metadata=meta)
                                   for k, (path, meta) in enumerate(rows[start:start + 500])])
        catalog.apply(batch)
    with catalog.read() as conn:
        ids = {p: i for i, p in conn.exec_driver_sql("SELECT id, path FROM images")}
    catalog.close()
    truth = {ids[path]: (vectors[k], path, meta) for k, (path, meta) in enumerate(rows)}
    library = Library.open(folder)
    library.repair()  # as an index run would: readers never build a large (IVF) index themselves
    return library, truth


def matches(filters: SearchFilters, path: bytes, meta: ImageMetadata) -> bool:
    """The filters' meaning, written independently of their SQL."""
    if filters.after is not None and (meta.taken_at is None or meta.taken_at < filters.after):
        return False
    if filters.before is not None and (meta.taken_at is None or meta.taken_at >= filters.before):
        return False
    if filters.folder is not None and not path.startswith(filters.folder.rstrip(b"/") + b"/"):
        return False
    if filters.camera is not None:
        text = filters.camera.lower()
        if not any(v and text in v.lower() for v in (meta.make, meta.model)):
            return False
    if filters.near is not None:
        d = distance_km(meta.latitude, meta.longitude, filters.near.latitude, filters.near.longitude)
        if d is None or d > filters.near.km:
            return False
    if filters.format is not None and meta.format != filters.format:
        return False
    if filters.orientation is not None:
        shape = "landscape" if meta.width > meta.height else "portrait" if meta.height > meta.width else "square"
        if shape != filters.orientation:
            return False
    return True


def brute_force(truth: dict, filters: SearchFilters, query: np.ndarray, k: int) -> list[int]:
    ids = [i for i, (_, path, meta) in truth.items() if matches(filters, path, meta)]
    scores = np.array([truth[i][0] @ query for i in ids])
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def year(y: int, m: int = 1) -> float:
    return datetime(y, m, 1).timestamp()


# Selectivities from one image to all of them.
FILTERS = [
    SearchFilters(near=Near(PARIS[0], PARIS[1], 0.3), format="png", orientation="square"),
    SearchFilters(after=year(2010, 3), before=year(2010, 5), camera="canon"),
    SearchFilters(folder=ROOT + b"/p/a", format="heic", orientation="portrait"),
    SearchFilters(near=Near(*PARIS, 1.0)),
    SearchFilters(after=year(2003), before=year(2020), camera="nikon"),
    SearchFilters(folder=ROOT + b"/p"),
    SearchFilters(after=year(2001)),
    SearchFilters(before=year(2030)),
    SearchFilters(camera="e"),
]


@pytest.fixture(scope="module")
def rows() -> list[tuple[bytes, ImageMetadata]]:
    return synthetic_metadata(np.random.default_rng(1), N)


def check_against_brute_force(library: Library, truth: dict, limit: int = 10, queries: int = 3) -> list[int]:
    rng = np.random.default_rng(7)
    counts = []
    for filters in FILTERS:
        count = sum(matches(filters, p, m) for _, p, m in truth.values())
        counts.append(count)
        for _ in range(queries):
            query = rng.standard_normal(DIM).astype(np.float32)
            query /= np.linalg.norm(query)
            expected = brute_force(truth, filters, query, limit)
            got = [h.id for h in library.search_vector(query, limit, filters=filters)]
            assert got == expected, (filters, count)
            exact = [h.id for h in library.search_vector(query, limit, exact=True, filters=filters)]
            assert exact == expected
    return counts


def test_selectivity_spans_one_image_to_all(isolated, rows):
    _, truth = make_library(isolated / "lib", rows)
    counts = [sum(matches(f, p, m) for _, p, m in truth.values()) for f in FILTERS]
    assert 1 <= counts[0] <= 3 and max(counts) >= 0.95 * N, counts  # 0.03% .. 100% of the dated images


@pytest.mark.parametrize("exact_matches, listed", [(2000, 30_000), (0, 30_000), (0, 200)])
def test_flat_library_matches_brute_force(isolated, rows, monkeypatch, exact_matches, listed):
    """Every path (exact scores, restricted index search, deeper ranking) gives brute force's top-k."""
    monkeypatch.setattr(filtered, "EXACT_MATCHES", exact_matches)
    monkeypatch.setattr(filtered, "LISTED_MATCHES", listed)
    library, truth = make_library(isolated / "lib", rows)
    check_against_brute_force(library, truth)
    assert library._readable_index().kind == vector_index.FLAT


@pytest.mark.parametrize("exact_matches, listed", [(0, 30_000), (0, 200), (50, 1000)])
def test_ivf_library_matches_brute_force(isolated, rows, monkeypatch, exact_matches, listed):
    monkeypatch.setattr(vector_index, "ANN_THRESHOLD", 500)
    monkeypatch.setattr(filtered, "EXACT_MATCHES", exact_matches)
    monkeypatch.setattr(filtered, "LISTED_MATCHES", listed)
    library, truth = make_library(isolated / "lib", rows)
    assert library._readable_index().kind == vector_index.IVF_SQ8
    check_against_brute_force(library, truth)


def test_camera_filter_through_a_like_on_every_row_agrees(isolated, rows, monkeypatch):
    """Past MAX_CAMERA_TERMS matching cameras, the filter falls back to LIKE on make and model: same results."""
    monkeypatch.setattr(filters_module, "MAX_CAMERA_TERMS", 0)
    library, truth = make_library(isolated / "lib", rows)
    check_against_brute_force(library, truth, queries=1)


def test_without_a_usable_index_filters_are_answered_exactly(isolated, rows, monkeypatch):
    monkeypatch.setattr(vector_index, "ANN_THRESHOLD", 500)
    library, truth = make_library(isolated / "lib", rows)
    (library.folder / "vectors.faiss").unlink()
    reader = Library.open(library.folder, notice=lambda message: None)
    assert reader._readable_index() is None  # readers do not build a large index
    check_against_brute_force(reader, truth, queries=1)


def test_filtered_results_skip_files_that_are_gone(isolated, rows):
    library, truth = make_library(isolated / "lib", rows[:600])
    filters = SearchFilters(folder=ROOT + b"/p")
    query = unit_vectors(1, seed=9)[0]
    first = library.search_vector(query, 5, filters=filters)
    os.unlink(first[0].path)
    try:
        again = library.search_vector(query, 5, filters=filters)
        assert [h.id for h in again] == [h.id for h in first[1:]] + [again[-1].id] and len(again) == 5
        assert again[-1].id not in {h.id for h in first}
    finally:
        open(first[0].path, "ab").close()


def test_ivf_never_returns_fewer_than_limit_when_enough_match(isolated, rows, monkeypatch):
    """With one cell scanned, a sparse match set still fills the limit: more cells are scanned."""
    monkeypatch.setattr(vector_index, "ANN_THRESHOLD", 500)
    monkeypatch.setattr(filtered, "EXACT_MATCHES", 0)
    library, truth = make_library(isolated / "lib", rows)
    index = library._readable_index()
    index.nprobe = 1
    rng = np.random.default_rng(3)
    for filters in FILTERS[1:]:
        count = sum(matches(filters, p, m) for _, p, m in truth.values())
        for limit in (count, 15):
            query = rng.standard_normal(DIM).astype(np.float32)
            hits = library.search_vector(query / np.linalg.norm(query), limit, filters=filters)
            assert len(hits) == min(limit, count)
            assert all(matches(filters, truth[h.id][1], truth[h.id][2]) for h in hits)


@pytest.mark.parametrize("threshold", [500, 30_000])
def test_matches_that_rank_low_are_still_found(isolated, rows, monkeypatch, threshold):
    """Matches far down the index's ranking: reading it deeper, then listing them, still gives brute force's top-k."""
    monkeypatch.setattr(vector_index, "ANN_THRESHOLD", threshold)
    monkeypatch.setattr(filtered, "EXACT_MATCHES", 0)
    monkeypatch.setattr(filtered, "LISTED_MATCHES", 100)
    vectors = unit_vectors(N, seed=5)
    # png for the 3 images most like the query and those least like it: the deeper read must go past the others
    png = (vectors[:, 0] < -0.2) | (vectors[:, 0] >= np.sort(vectors[:, 0])[-3])
    rows = [(path, replace(meta, format="png" if png[k] else "jpeg")) for k, (path, meta) in enumerate(rows)]
    library, truth = make_library(isolated / "lib", rows, vectors)
    query = np.zeros(DIM, np.float32)
    query[0] = 1.0
    for filters in (SearchFilters(format="png"), SearchFilters(format="png", orientation="square")):
        assert sum(matches(filters, p, m) for _, p, m in truth.values()) > 100
        for limit in (10, 150):
            hits = library.search_vector(query, limit, filters=filters)
            assert [h.id for h in hits] == brute_force(truth, filters, query, limit)


def test_filters_alone_list_newest_first(isolated, rows):
    library, truth = make_library(isolated / "lib", rows)
    filters = SearchFilters(camera="iphone", orientation="landscape")
    hits = library.search(filters=filters, limit=25)
    dated = sorted(((m.taken_at, i) for i, (_, p, m) in truth.items() if matches(filters, p, m) and m.taken_at),
                   reverse=True)
    assert [h.id for h in hits] == [i for _, i in dated[:25]]
    assert all(h.score is None for h in hits)
    everything = library.search(filters=SearchFilters(folder=ROOT + b"/q"), limit=N)
    assert len(everything) == sum(p.startswith(ROOT + b"/q/") for _, p, _ in truth.values())
    undated = [h for h in everything if h.taken_at is None and truth[h.id][2].taken_at is None]
    assert everything[-len(undated):] == undated  # unknown dates come last


def test_folder_filter_is_a_path_prefix_on_folders(isolated, rows):
    library, truth = make_library(isolated / "lib", rows)
    cases = [(b"/p/a", (b"/p/a", b"/p/a/sub")), (b"/p/a/", (b"/p/a", b"/p/a/sub")), (b"/p/b", (b"/p/b/deep/er",)),
             (b"/p", (b"/p/a", b"/p/a/sub", b"/p/ab", b"/p/b/deep/er")), (b"/p/a/su", ())]
    for folder, expected in cases:
        hits = library.search(filters=SearchFilters(folder=ROOT + folder), limit=N)
        assert {os.path.dirname(os.fsencode(h.path)) for h in hits} == {ROOT + e for e in expected}, folder
    assert len(library.search(filters=SearchFilters(folder=b"/"), limit=N)) == N


def test_near_uses_great_circle_distance(isolated):
    km = 1 / 111.195  # ~degrees of latitude per km
    points = {
        "north_0.5": (PARIS[0] + 0.5 * km, PARIS[1]), "north_0.99": (PARIS[0] + 0.99 * km, PARIS[1]),
        "north_1.01": (PARIS[0] + 1.01 * km, PARIS[1]),
        # 0.9 km due east: 0.9/(111.195*cos(lat)) degrees of longitude; a degree-box of 1 km would miss it
        "east_0.9": (PARIS[0], PARIS[1] + 0.9 * km / math.cos(math.radians(PARIS[0]))),
        "east_1.1": (PARIS[0], PARIS[1] + 1.1 * km / math.cos(math.radians(PARIS[0]))),
        "west_of_dateline": (10.0, 179.999), "east_of_dateline": (10.0, -179.999), "far": (10.0, -179.9),
        "pole_a": (89.999, 0.0), "pole_b": (89.999, 180.0), "unknown": (None, None),
    }
    rows = [(ROOT + b"/n/" + name.encode() + b".jpg", ImageMetadata(width=1, height=1, latitude=lat, longitude=lon))
            for name, (lat, lon) in points.items()]
    library, _ = make_library(isolated / "lib", rows)

    def names(near: str) -> set[str]:
        hits = library.search(filters=SearchFilters.parse(near=near), limit=50)
        return {Path(h.path).stem for h in hits}

    assert names(f"{PARIS[0]},{PARIS[1]}") == {"north_0.5", "north_0.99", "east_0.9"}
    assert names(f"{PARIS[0]},{PARIS[1]},2") == {"north_0.5", "north_0.99", "north_1.01", "east_0.9", "east_1.1"}
    assert names("10,180,0.5") == {"west_of_dateline", "east_of_dateline"}
    assert names("90,0,1") == {"pole_a", "pole_b"}


def test_parse_dates_and_values():
    local = lambda *a: datetime(*a).timestamp()  # noqa: E731
    assert SearchFilters.parse(after="2023").after == local(2023, 1, 1)
    assert SearchFilters.parse(after="2023-06").after == local(2023, 6, 1)
    assert SearchFilters.parse(before="2023-06-14").before == local(2023, 6, 14)
    assert SearchFilters.parse(after="2023-06-14T10:30:00").after == local(2023, 6, 14, 10, 30)
    assert SearchFilters.parse(after="2023-06-14T10:30:00+02:00").after == \
        datetime(2023, 6, 14, 8, 30, tzinfo=timezone.utc).timestamp()
    assert SearchFilters.parse(after="2023-06-14T08:30Z").after == datetime(2023, 6, 14, 8, 30, tzinfo=timezone.utc).timestamp()
    assert SearchFilters.parse(format="JPG").format == "jpeg" and SearchFilters.parse(format="heif").format == "heic"
    assert SearchFilters.parse(near="1.5,-2").near == Near(1.5, -2.0, 1.0)
    assert SearchFilters.parse(near="1.5, -2, 0.25").near == Near(1.5, -2.0, 0.25)
    assert SearchFilters.parse(folder="/x/y/").folder == b"/x/y"
    assert SearchFilters.parse(orientation="Portrait").orientation == "portrait"
    assert not SearchFilters() and SearchFilters(camera="x")
    assert SearchFilters.from_params({"in": "/x", "near": "1,2", "after": "", "q": "dog"}) == \
        SearchFilters(folder=b"/x", near=Near(1.0, 2.0))


@pytest.mark.parametrize("option, value", [
    ("after", "2023-13"), ("after", "yesterday"), ("before", "2023-02-30"), ("before", ""), ("near", "48.8"),
    ("near", "91,0"), ("near", "0,181"), ("near", "1,2,-1"), ("near", "1,2,nan"), ("near", "a,b"),
    ("format", "raw"), ("orientation", "diagonal"), ("camera", "  "), ("folder", ""),
])
def test_bad_filter_values_are_one_line_errors(option, value):
    with pytest.raises(FilterError) as caught:
        SearchFilters.parse(**{option: value})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--" + ("in" if option == "folder" else option))


def test_camera_text_is_a_literal_substring(isolated):
    rows = [(ROOT + b"/c/1.jpg", ImageMetadata(make="Foo_Bar", model="X 100%")),
            (ROOT + b"/c/2.jpg", ImageMetadata(make="FooXBar")), (ROOT + b"/c/3.jpg", ImageMetadata(model="canon eos"))]
    library, _ = make_library(isolated / "lib", rows)
    stems = lambda text: {Path(h.path).stem for h in library.search(filters=SearchFilters(camera=text))}  # noqa: E731
    assert stems("o_b") == {"1"} and stems("100%") == {"1"} and stems("CANON") == {"3"} and stems("oox") == {"2"}


def test_cli_filters_and_json_fields(isolated, rows):
    rows = [(path, replace(meta, taken_at_local="2011-02-03T04:05:06", taken_at_offset="+01:00"))
            for path, meta in rows[:300]]
    library, truth = make_library(isolated / "lib", rows)
    result = run("search", "--library", library.folder, "--camera", "canon", "--orientation", "landscape",
                 "--in", os.fsdecode(ROOT + b"/p"), "--json", "--limit", "500")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    expected = SearchFilters(camera="canon", orientation="landscape", folder=ROOT + b"/p")
    assert {h["id"] for h in hits} == {i for i, (_, p, m) in truth.items() if matches(expected, p, m)}
    for hit in hits:
        meta = truth[hit["id"]][2]
        assert hit["taken_at"] == "2011-02-03T04:05:06+01:00" and hit["camera"] == meta.model
        assert (hit["width"], hit["height"], hit["latitude"], hit["longitude"]) == \
            (meta.width, meta.height, meta.latitude, meta.longitude)
        assert hit["score"] is None
    for bad in (["--after", "June"], ["--near", "1"], ["--format", "raw"], ["--orientation", "x"]):
        result = run("search", "--library", library.folder, *bad, ok=False)
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = run("search", "--library", library.folder, ok=False)
    assert result.exit_code == 2


def test_counting_stops_at_its_cap(isolated, rows):
    """A filter matching many images is counted only up to LISTED_MATCHES + 1, not over the whole catalog."""
    from indexer.catalog.matching import count_matching

    library, truth = make_library(isolated / "lib", rows)
    catalog = library._readable_catalog()
    filters = SearchFilters(orientation="landscape")
    where, params = filters.sql(catalog)
    true_count = sum(matches(filters, p, m) for _, p, m in truth.values())
    assert 300 < true_count < N - 300
    assert count_matching(catalog, where, params) == true_count
    assert count_matching(catalog, where, params, cap=200) == 200
    assert count_matching(catalog, where, params, cap=N) == true_count
