"""Image metadata: EXIF read in the decode worker, odd EXIF never failing a file, fill-in for old rows, `show`."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

import indexer.catalog.store as catalog_module
import indexer.catalog.writes as catalog_writes
import indexer.pipeline.metadata_fill as metadata_fill
from helpers.catalog import catalog_query, raw_sqlite
from helpers.cli import run
from helpers.images import avif, heic, photo, rotated_exif
from indexer.catalog.metadata import METADATA_COLUMNS
from indexer.images.decode import PreprocessConfig, decode_and_preprocess, decode_for_index
from indexer.images.metadata import ImageMetadata, header_metadata
from indexer.catalog.migrations import MIGRATIONS
from indexer.pipeline.local import IndexOptions
from searchengine.query.filters import SearchFilters
from searchengine.library.api import Library

CFG = PreprocessConfig(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
PARIS_DMS = ((48, 1), (51, 1), (2364, 100))  # 48°51'23.64" N
PARIS_LAT = 48 + 51 / 60 + 23.64 / 3600


def exif_jpeg(date: object = "2023:06:14 10:00:00", offset: object = "+02:00", make: object = "Canon",
              model: object = "Canon EOS R5", lens: object = "RF 24-70mm F2.8", orientation: object = None,
              gps: dict | None = None, size: tuple[int, int] = (96, 64), seed: int = 0, raw: bytes | None = None) -> bytes:
    """A JPEG carrying the given EXIF (None leaves a tag out); `raw` replaces the EXIF block as is."""
    exif = Image.Exif()
    for tag, value in ((0x010F, make), (0x0110, model), (0x0112, orientation)):
        if value is not None:
            exif[tag] = value
    sub = exif.get_ifd(0x8769)
    for tag, value in ((0x9003, date), (0x9011, offset), (0xA434, lens)):
        if value is not None:
            sub[tag] = value
    if gps:
        exif.get_ifd(0x8825).update(gps)
    buf = io.BytesIO()
    photo(seed, size).save(buf, "JPEG", exif=raw if raw is not None else exif.tobytes())
    return buf.getvalue()


Entry = tuple[int, int, int, bytes]  # tag, TIFF type (2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL), count, value bytes


def raw_exif(ifd0: list[Entry], gps: list[Entry]) -> bytes:
    """An EXIF block written by hand, so tags can carry types PIL would refuse to write."""
    def block(entries: list[Entry], start: int) -> bytes:
        head, data = struct.pack("<H", len(entries)), b""
        data_at = start + 2 + 12 * len(entries) + 4
        for tag, kind, count, value in sorted(entries):
            if len(value) <= 4:
                head += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
            else:
                head += struct.pack("<HHII", tag, kind, count, data_at + len(data))
                data += value + b"\0" * (len(value) % 2)
        return head + struct.pack("<I", 0) + data

    first = block(ifd0 + [(0x8825, 4, 1, b"\0" * 4)], 8)
    ifd0 = ifd0 + [(0x8825, 4, 1, struct.pack("<I", 8 + len(first)))]
    return b"Exif\0\0II*\0" + struct.pack("<I", 8) + block(ifd0, 8) + block(gps, 8 + len(first))


def paris_gps(lat_ref: str = "N", lon_ref: str = "W") -> dict:
    return {1: lat_ref, 2: tuple(IFDRational(*p) for p in PARIS_DMS), 3: lon_ref, 4: (IFDRational(2, 1), IFDRational(21, 1), IFDRational(0, 1))}


def both_paths(data: bytes) -> ImageMetadata:
    """Metadata read by the decode path and by the header-only path: they must agree."""
    pixels, decoded = decode_for_index(data, CFG)
    assert pixels.shape == (3, 32, 32)
    assert decoded == header_metadata(data)
    return decoded


def test_full_exif_is_read():
    meta = both_paths(exif_jpeg(gps=paris_gps()))
    assert meta.taken_at == datetime(2023, 6, 14, 8, 0, tzinfo=timezone.utc).timestamp()
    assert (meta.taken_at_local, meta.taken_at_offset, meta.taken_at_source) == ("2023-06-14T10:00:00", "+02:00", "exif")
    assert (meta.width, meta.height, meta.format) == (96, 64, "jpeg")
    assert (meta.make, meta.model, meta.lens) == ("Canon", "Canon EOS R5", "RF 24-70mm F2.8")
    assert meta.latitude == pytest.approx(PARIS_LAT) and meta.longitude == pytest.approx(-(2 + 21 / 60))


def test_date_without_offset_is_local_time_marked_as_such():
    meta = both_paths(exif_jpeg(offset=None))
    assert meta.taken_at_source == "exif-local" and meta.taken_at_offset is None
    assert meta.taken_at == datetime(2023, 6, 14, 10, 0).timestamp()  # read in this machine's zone


@pytest.mark.parametrize("orientation, size", [(1, (96, 64)), (3, (96, 64)), (6, (64, 96)), (8, (64, 96)), (5, (64, 96))])
def test_size_is_as_displayed(orientation, size):
    meta = both_paths(exif_jpeg(orientation=orientation))
    assert (meta.width, meta.height) == size


def test_southern_and_eastern_coordinates_are_signed():
    meta = both_paths(exif_jpeg(gps=paris_gps("S", "E")))
    assert meta.latitude == pytest.approx(-PARIS_LAT) and meta.longitude == pytest.approx(2 + 21 / 60)


def test_no_exif_falls_back_to_mtime():
    buf = io.BytesIO()
    photo(1).save(buf, "PNG")
    meta = both_paths(buf.getvalue())
    assert meta.taken_at is None and meta.format == "png" and (meta.width, meta.height) == (96, 64)
    dated = meta.with_mtime_fallback(1_700_000_000_123_000_000)
    assert dated.taken_at == pytest.approx(1_700_000_000.123) and dated.taken_at_source == "mtime"
    assert datetime.fromisoformat(dated.taken_at_local + dated.taken_at_offset).timestamp() == 1_700_000_000


BROKEN = {
    "year 0": (dict(date="0000:00:00 00:00:00"), {"taken_at": None}),
    "month 13": (dict(date="2023:13:01 10:00:00"), {"taken_at": None}),
    "year 1": (dict(date="0001:01:01 00:00:00"), {"taken_at": None}),
    "date not a date": (dict(date="yesterday"), {"taken_at": None}),
    "date of wrong type": (dict(date=12345), {"taken_at": None}),
    "absurd offset": (dict(offset="+99:00"), {"taken_at_source": "exif-local"}),
    "offset of wrong type": (dict(offset=(1, 2)), {"taken_at_source": "exif-local"}),
    "make of wrong type": (dict(make=(1, 2)), {}),
    "nan gps": (dict(gps={1: "N", 2: (IFDRational(48, 0), IFDRational(0, 1), IFDRational(0, 1)), 3: "E",
                          4: (IFDRational(2, 1), IFDRational(0, 1), IFDRational(0, 1))}), {"latitude": None, "longitude": None}),
    "latitude out of range": (dict(gps={1: "N", 2: (IFDRational(95, 1), IFDRational(0, 1), IFDRational(0, 1)), 3: "E",
                                        4: (IFDRational(2, 1), IFDRational(0, 1), IFDRational(0, 1))}), {"latitude": None}),
    "gps of wrong type": (dict(raw=raw_exif([], [(1, 2, 2, b"N\0"), (2, 2, 6, b"north\0"), (3, 2, 2, b"E\0"),
                                                  (4, 3, 1, struct.pack("<H", 7))])), {"latitude": None, "longitude": None}),
    "tags of wrong types": (dict(raw=raw_exif([(0x010F, 5, 1, struct.pack("<II", 1, 0)), (0x9003, 3, 1, b"\1\0"),
                                               (0x0112, 2, 4, b"six\0")], [])), {"taken_at": None, "make": None, "width": 96, "height": 64}),
    "gps without fix (0,0)": (dict(gps={1: "N", 2: (IFDRational(0, 1),) * 3, 3: "E", 4: (IFDRational(0, 1),) * 3}),
                              {"latitude": None}),
    "unknown reference": (dict(gps={**paris_gps(), 1: "Q"}), {"latitude": None}),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_odd_exif_leaves_the_field_empty(case):
    kwargs, expected = BROKEN[case]
    meta = both_paths(exif_jpeg(**kwargs))
    for field, value in expected.items():
        assert getattr(meta, field) == value, field
    assert (meta.width or 0) > 0 and meta.format == "jpeg"  # the rest is still read


@pytest.mark.parametrize("cut", [8, 20, 40, 80])
def test_truncated_exif_never_fails_the_image(cut):
    raw = Image.Exif()
    raw[0x010F] = "Canon"
    raw.get_ifd(0x8769)[0x9003] = "2023:06:14 10:00:00"
    raw.get_ifd(0x8825).update(paris_gps())
    data = exif_jpeg(raw=raw.tobytes()[:cut])
    meta = both_paths(data)
    assert (meta.width, meta.height, meta.format) == (96, 64, "jpeg")
    assert np.array_equal(decode_and_preprocess(data, CFG), decode_for_index(data, CFG)[0])


def index(folder: Path, model: str | None = None, workers: int = 0):
    return Library.open().index([str(folder)], model=model, options=IndexOptions(batch_size=4, workers=workers))


@pytest.fixture
def folder(isolated) -> Path:
    photos = isolated / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "full.jpg").write_bytes(exif_jpeg(gps=paris_gps(), orientation=6))
    (photos / "local.jpg").write_bytes(exif_jpeg(offset=None, seed=2))
    (photos / "broken.jpg").write_bytes(exif_jpeg(date="0000:00:00 00:00:00", seed=3, gps={
        1: "N", 2: (IFDRational(1, 0),) * 3, 3: "W", 4: (IFDRational(1, 0),) * 3}))
    (photos / "truncated.jpg").write_bytes(exif_jpeg(raw=exif_jpeg()[6:40], seed=4))
    photo(5).save(photos / "sub" / "plain.png")
    os.utime(photos / "sub" / "plain.png", ns=(1_600_000_000_000_000_000,) * 2)
    return photos


def test_index_stores_metadata_and_odd_exif_fails_nothing(folder, tiny_model_name):
    summary = index(folder, tiny_model_name, workers=1)  # the worker process path
    assert (summary.added, summary.failed) == (5, 0)
    library = Library.open()
    full = library.show(str(folder / "full.jpg"))
    assert (full.width, full.height, full.format, full.taken_at, full.taken_at_source) == \
        (64, 96, "jpeg", "2023-06-14T10:00:00+02:00", "exif")
    assert (full.camera, full.make, full.model, full.lens) == ("Canon EOS R5", "Canon", "Canon EOS R5", "RF 24-70mm F2.8")
    assert full.latitude == pytest.approx(PARIS_LAT) and full.longitude == pytest.approx(-(2 + 21 / 60))
    assert library.show(str(folder / "local.jpg")).taken_at == "2023-06-14T10:00:00"
    broken = library.show(str(folder / "broken.jpg"))
    assert broken.taken_at_source == "mtime" and broken.latitude is None and broken.make == "Canon"
    plain = library.show(str(folder / "sub" / "plain.png"))
    assert plain.taken_at_source == "mtime" and plain.format == "png" and plain.make is None
    assert datetime.fromisoformat(plain.taken_at).timestamp() == 1_600_000_000


def test_a_copy_reusing_an_embedding_gets_its_own_metadata(folder, tiny_model_name):
    index(folder, tiny_model_name)
    copy = folder / "copy.png"
    shutil.copyfile(folder / "sub" / "plain.png", copy)
    os.utime(copy, ns=(1_500_000_000_000_000_000,) * 2)
    summary = index(folder)
    assert (summary.added, summary.reused, summary.encoded) == (1, 1, 0)
    shown = Library.open().show(str(copy))
    assert shown.taken_at_source == "mtime" and datetime.fromisoformat(shown.taken_at).timestamp() == 1_500_000_000


def catalog_rows(path: Path) -> dict[bytes, tuple]:
    query = f"SELECT path, meta_version, {', '.join(METADATA_COLUMNS)} FROM images"
    return {r[0]: r[1:] for r in catalog_query(path, query)}


def test_rows_from_before_metadata_are_filled_from_headers(folder, tiny_model_name):
    index(folder, tiny_model_name)
    catalog_path = Library.open().catalog_path
    before = catalog_rows(catalog_path)
    with raw_sqlite(catalog_path) as conn:  # rows as a version without metadata left them
        conn.execute(f"UPDATE images SET meta_version=NULL, {', '.join(c + '=NULL' for c in METADATA_COLUMNS)}")
    assert not Library.open().show(str(folder / "full.jpg")).metadata_read
    summary = index(folder)
    assert (summary.metadata_filled, summary.encoded, summary.unchanged) == (5, 0, 5)
    assert catalog_rows(catalog_path) == before
    assert index(folder).metadata_filled == 0


def test_a_catalog_from_before_the_migration_is_upgraded_and_filled(folder, tiny_model_name, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(catalog_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < "004"])
        patch.setattr(catalog_writes, "write_metadata", lambda *args: None)  # the code of that time
        patch.setattr(metadata_fill, "fill_missing_metadata", lambda *args: 0)
        index(folder, tiny_model_name)
    summary = index(folder)
    assert (summary.metadata_filled, summary.encoded) == (5, 0)
    assert Library.open().show(str(folder / "full.jpg")).taken_at == "2023-06-14T10:00:00+02:00"
    found = Library.open().search(filters=SearchFilters(camera="eos r"))  # cameras known from the fill-in
    assert {Path(h.path).name for h in found} == {"full.jpg", "local.jpg", "broken.jpg"}


def test_fill_in_leaves_changed_files_to_the_index_run(folder, tiny_model_name):
    index(folder, tiny_model_name)
    catalog_path = Library.open().catalog_path
    with raw_sqlite(catalog_path) as conn:
        conn.execute("UPDATE images SET meta_version=NULL, taken_at=NULL")
    (folder / "local.jpg").write_bytes(exif_jpeg(date="2020:01:02 03:04:05", seed=9))
    summary = index(folder)
    assert (summary.updated, summary.metadata_filled) == (1, 4)
    assert Library.open().show(str(folder / "local.jpg")).taken_at == "2020-01-02T03:04:05+02:00"


def test_show_by_path_and_id(folder, tiny_model_name):
    index(folder, tiny_model_name)
    shown = json.loads(run("show", folder / "full.jpg", "--json").stdout)
    assert shown["path"] == str(folder / "full.jpg") and shown["taken_at"] == "2023-06-14T10:00:00+02:00"
    assert shown["content_hash"] == __import__("hashlib").blake2b((folder / "full.jpg").read_bytes(), digest_size=16).hexdigest()
    assert shown["size"] == (folder / "full.jpg").stat().st_size and shown["width"] == 64
    assert datetime.fromisoformat(shown["mtime"]) - datetime.fromtimestamp(
        (folder / "full.jpg").stat().st_mtime, timezone.utc) < timedelta(seconds=1)
    by_id = json.loads(run("show", str(shown["id"]), "--json").stdout)
    assert by_id == shown
    plain = run("show", shown["id"]).stdout
    assert f"path: {folder / 'full.jpg'}" in plain and "camera: Canon EOS R5" in plain
    for unknown in ("999999", str(folder / "nothere.jpg"), "photos/full.jpeg"):
        result = run("show", unknown, ok=False)
        assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_search_hits_carry_metadata(folder, tiny_model_name):
    index(folder, tiny_model_name)
    hits = json.loads(run("search", "a photo", "--json", "--limit", "10").stdout)
    by_name = {Path(h["path"]).name: h for h in hits}
    assert len(hits) == 5
    full = by_name["full.jpg"]
    assert (full["taken_at"], full["width"], full["height"], full["camera"]) == \
        ("2023-06-14T10:00:00+02:00", 64, 96, "Canon EOS R5")
    assert full["latitude"] == pytest.approx(PARIS_LAT) and by_name["plain.png"]["latitude"] is None
    newest = [line.split("\t") for line in run("search", "--camera", "canon", "--limit", "10").stdout.splitlines()]
    names = [Path(path).name for _, path in newest]
    assert {"full.jpg", "local.jpg", "broken.jpg"} <= set(names) and "plain.png" not in names
    assert names[0] == "broken.jpg" and newest[0][0] == Library.open().show(newest[0][1]).taken_at  # its mtime: now


def test_heic_and_avif_metadata_as_displayed():
    pytest.importorskip("pillow_heif")
    from indexer.images.decode import load_rgb

    for kind, make in (("avif", avif), ("heic", heic)):
        data = make(photo(1), exif=rotated_exif())
        meta = both_paths(data)
        assert (meta.format, meta.width, meta.height) == (kind, 64, 96) == (kind, *load_rgb(data).size)
