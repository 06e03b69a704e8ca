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

import indexer.catalog.metadata as catalog_metadata
import indexer.catalog.store as catalog_module
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
        # the schema of that time, but for the steps today's code cannot run without (video segments)
        patch.setattr(catalog_module, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < "004" or m[0] >= "007"])
        # the code of that time (the writes import it where they use it)
        patch.setattr(catalog_metadata, "write_metadata", lambda *args: None)
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


# --- capture time from where devices write it: EXIF DateTimeOriginal, XMP, DateTimeDigitized, DateTime, mtime ---

def utc(*parts: int, micro: int = 0) -> float:
    return datetime(*parts, micro, tzinfo=timezone.utc).timestamp()


def xmp_packet(attributes: str = "", elements: str = "") -> bytes:
    """An XMP packet as editors write it: properties as rdf:Description attributes and/or child elements."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/"'
        ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
        f' xmp:CreatorTool="Editor 1.0" {attributes}>{elements}</rdf:Description>\n'
        '</rdf:RDF></x:xmpmeta>\n<?xpacket end="w"?>').encode()


def dated_image(ifd0: dict | None = None, sub: dict | None = None, xmp: bytes | None = None, fmt: str = "JPEG",
                seed: int = 0) -> bytes:
    """An image with the given IFD0 and Exif-IFD tags and XMP packet, nothing else."""
    exif = Image.Exif()
    exif.update(ifd0 or {})
    if sub:
        exif.get_ifd(0x8769).update(sub)
    buf, options = io.BytesIO(), {}
    if ifd0 or sub:
        options["exif"] = exif.tobytes()
    if xmp is not None and fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=False)
        options["pnginfo"] = info
    elif xmp is not None:
        options["xmp"] = xmp
    photo(seed).save(buf, fmt, **options)
    return buf.getvalue()


DTO = {0x9003: "2023:06:14 10:00:00", 0x9011: "+02:00"}
DIGITIZED = {0x9004: "2022:03:04 05:06:07", 0x9012: "-05:00"}
IFD0_DATETIME = {0x0132: "2021:12:31 23:59:58"}
XMP_DTO = xmp_packet('exif:DateTimeOriginal="2021-05-01T10:11:12+02:00"')

SOURCES = {  # name: (image, taken_at, taken_at_local, taken_at_offset, taken_at_source)
    "exif": (dated_image(sub=DTO), utc(2023, 6, 14, 8), "2023-06-14T10:00:00", "+02:00", "exif"),
    "exif-local": (dated_image(sub={0x9003: "2023:06:14 10:00:00"}), datetime(2023, 6, 14, 10).timestamp(),
                   "2023-06-14T10:00:00", None, "exif-local"),
    "xmp attribute": (dated_image(xmp=XMP_DTO), utc(2021, 5, 1, 8, 11, 12), "2021-05-01T10:11:12", "+02:00", "xmp"),
    "xmp element, Z, fraction": (
        dated_image(xmp=xmp_packet(elements="<exif:DateTimeOriginal>2021-05-01T10:11:12.345Z</exif:DateTimeOriginal>")),
        utc(2021, 5, 1, 10, 11, 12, micro=345000), "2021-05-01T10:11:12", "+00:00", "xmp"),
    "xmp local": (dated_image(xmp=xmp_packet('exif:DateTimeOriginal="2021-05-01T10:11:12"')),
                  datetime(2021, 5, 1, 10, 11, 12).timestamp(), "2021-05-01T10:11:12", None, "xmp-local"),
    "xmp date only": (dated_image(xmp=xmp_packet('photoshop:DateCreated="2021-05-01"')),
                      datetime(2021, 5, 1).timestamp(), "2021-05-01T00:00:00", None, "xmp-local"),
    "xmp photoshop element, minutes only": (
        dated_image(xmp=xmp_packet(
            elements="<photoshop:DateCreated>\n 2020-02-29T23:30-03:30\n</photoshop:DateCreated>")),
        utc(2020, 3, 1, 3, 0), "2020-02-29T23:30:00", "-03:30", "xmp"),
    "xmp in png": (dated_image(xmp=XMP_DTO, fmt="PNG"), utc(2021, 5, 1, 8, 11, 12), "2021-05-01T10:11:12", "+02:00",
                   "xmp"),
    "xmp in webp": (dated_image(xmp=XMP_DTO, fmt="WEBP"), utc(2021, 5, 1, 8, 11, 12), "2021-05-01T10:11:12", "+02:00",
                    "xmp"),
    "exif-digitized": (dated_image(sub=DIGITIZED), utc(2022, 3, 4, 10, 6, 7), "2022-03-04T05:06:07", "-05:00",
                       "exif-digitized"),
    "exif-digitized-local": (dated_image(sub={0x9004: "2022:03:04 05:06:07"}),
                             datetime(2022, 3, 4, 5, 6, 7).timestamp(),
                             "2022-03-04T05:06:07", None, "exif-digitized-local"),
    "exif-datetime": (dated_image(IFD0_DATETIME, {0x9010: "+09:00"}), utc(2021, 12, 31, 14, 59, 58),
                      "2021-12-31T23:59:58", "+09:00", "exif-datetime"),
    "exif-datetime-local": (dated_image(IFD0_DATETIME), datetime(2021, 12, 31, 23, 59, 58).timestamp(),
                            "2021-12-31T23:59:58", None, "exif-datetime-local"),
}


@pytest.mark.parametrize("case", list(SOURCES))
def test_each_date_source_alone(case):
    data, taken_at, local, offset, source = SOURCES[case]
    meta = both_paths(data)
    assert meta.taken_at == pytest.approx(taken_at, abs=1e-6)
    assert (meta.taken_at_local, meta.taken_at_offset, meta.taken_at_source) == (local, offset, source)
    assert meta.with_mtime_fallback(1_600_000_000_000_000_000) == meta  # a date found: mtime not used


PRIORITY = {  # name: (image, source it takes)
    "original over xmp": (dated_image(sub=DTO, xmp=XMP_DTO), "exif"),
    "local original over xmp with offset": (dated_image(sub={0x9003: "2023:06:14 10:00:00"}, xmp=XMP_DTO),
                                            "exif-local"),
    "xmp over digitized": (dated_image(sub=DIGITIZED, xmp=XMP_DTO), "xmp"),
    "xmp over datetime": (dated_image(IFD0_DATETIME, xmp=XMP_DTO), "xmp"),
    "digitized over datetime": (dated_image(IFD0_DATETIME, DIGITIZED), "exif-digitized"),
    "all of them": (dated_image(IFD0_DATETIME, {**DTO, **DIGITIZED}, XMP_DTO), "exif"),
    "xmp exif:DateTimeOriginal over photoshop:DateCreated": (dated_image(xmp=xmp_packet(
        'photoshop:DateCreated="2001-01-01" exif:DateTimeOriginal="2021-05-01T10:11:12+02:00"')), "xmp"),
    "broken original falls through to xmp": (dated_image(sub={0x9003: "0000:00:00 00:00:00"}, xmp=XMP_DTO), "xmp"),
    "broken xmp falls through to digitized": (dated_image(sub=DIGITIZED, xmp=xmp_packet(
        'exif:DateTimeOriginal="garbage" photoshop:DateCreated="2021-13-45"')), "exif-digitized"),
    "broken digitized falls through to datetime": (dated_image(IFD0_DATETIME, {0x9004: "    :  :     :  :  "}),
                                                   "exif-datetime-local"),
}


@pytest.mark.parametrize("case", list(PRIORITY))
def test_date_sources_in_priority_order(case):
    data, source = PRIORITY[case]
    expected = {"exif": "2023-06-14T10:00:00", "exif-local": "2023-06-14T10:00:00", "xmp": "2021-05-01T10:11:12",
                "exif-digitized": "2022-03-04T05:06:07", "exif-datetime-local": "2021-12-31T23:59:58"}[source]
    meta = both_paths(data)
    assert (meta.taken_at_source, meta.taken_at_local) == (source, expected)


def test_photoshop_date_created_when_alone():
    meta = both_paths(dated_image(xmp=xmp_packet("photoshop:DateCreated='2019-07-08T09:10:11.5+01:00'")))
    assert meta.taken_at == pytest.approx(utc(2019, 7, 8, 8, 10, 11, micro=500000))
    assert (meta.taken_at_local, meta.taken_at_offset, meta.taken_at_source) == ("2019-07-08T09:10:11", "+01:00", "xmp")


def test_no_date_anywhere_falls_back_to_mtime():
    meta = both_paths(dated_image({0x010F: "Canon"}, xmp=xmp_packet('xmp:CreateDate="2021-05-01"')))
    assert meta.taken_at is None and meta.make == "Canon"
    assert meta.with_mtime_fallback(1_600_000_000_000_000_000).taken_at_source == "mtime"


def test_xmp_beyond_the_first_64_kb_is_not_read():
    padding = "<!-- " + "x" * 70_000 + " -->"
    late = xmp_packet(elements=padding + "<exif:DateTimeOriginal>2021-05-01T10:11:12Z</exif:DateTimeOriginal>")
    assert both_paths(dated_image(xmp=late, fmt="PNG")).taken_at is None  # PNG: JPEG's APP1 holds 64 KB at most
    early = xmp_packet(elements="<exif:DateTimeOriginal>2021-05-01T10:11:12Z</exif:DateTimeOriginal>" + padding)
    assert both_paths(dated_image(xmp=early, fmt="PNG")).taken_at_source == "xmp"


@pytest.mark.parametrize("packet", [b"", b"\xff\xfe\x00garbage", b"<x:xmpmeta", "exif:DateTimeOriginal=\"".encode(),
                                    xmp_packet('exif:DateTimeOriginal="0000-00-00T00:00:00"'),
                                    xmp_packet('exif:DateTimeOriginal="1700-01-01"'),
                                    xmp_packet('exif:DateTimeOriginal="2021-05-01T10:11:12+99:00"')])
def test_odd_xmp_never_fails_the_image(packet):
    meta = both_paths(dated_image(xmp=packet))
    assert meta.format == "jpeg" and (meta.width, meta.height) == (96, 64)
    if b"+99:00" in packet:  # an absurd offset: the wall-clock time is kept, as for EXIF
        assert (meta.taken_at_source, meta.taken_at_local) == ("xmp-local", "2021-05-01T10:11:12")
    else:
        assert meta.taken_at is None


SUBSECONDS = {  # SubSecTime* as written: its fraction of a second
    "345": 0.345, "05": 0.05, "7": 0.7, "123456 ": 0.123456, "000": 0.0, "  ": 0.0, "abc": 0.0,
}


@pytest.mark.parametrize("subsec", list(SUBSECONDS))
def test_subseconds_go_into_taken_at(subsec):
    meta = both_paths(dated_image(sub={**DTO, 0x9291: subsec}))
    assert meta.taken_at == pytest.approx(utc(2023, 6, 14, 8) + SUBSECONDS[subsec], abs=1e-6)
    assert (meta.taken_at_local, meta.taken_at_offset, meta.taken_at_source) == \
        ("2023-06-14T10:00:00", "+02:00", "exif")


def test_each_exif_date_takes_its_own_subseconds():
    digitized = both_paths(dated_image(sub={**DIGITIZED, 0x9291: "9", 0x9292: "25", 0x9290: "5"}))
    assert digitized.taken_at == pytest.approx(utc(2022, 3, 4, 10, 6, 7) + 0.25)
    changed = both_paths(dated_image(IFD0_DATETIME, {0x9292: "25", 0x9290: "5"}))
    assert changed.taken_at == pytest.approx(datetime(2021, 12, 31, 23, 59, 58).timestamp() + 0.5)
    assert changed.taken_at_local == "2021-12-31T23:59:58"


BLANK = {"NULs": b"\x00\x00\x00", "spaces": "   ", "empty": "", "spaces and NULs": " \x00 \x00", "tabs": "\t \t"}


@pytest.mark.parametrize("blank", list(BLANK))
def test_blank_make_or_model_is_unknown(blank):
    value = BLANK[blank]
    both = both_paths(dated_image({0x010F: value, 0x0110: value}, DTO))
    assert (both.make, both.model) == (None, None) and both.taken_at_source == "exif"
    no_model = both_paths(dated_image({0x010F: "Apple", 0x0110: value}))
    assert (no_model.make, no_model.model) == ("Apple", None)
    no_make = both_paths(dated_image({0x010F: value, 0x0110: "iPhone 15 Pro"}))
    assert (no_make.make, no_make.model) == (None, "iPhone 15 Pro")


def test_padded_make_and_model_are_trimmed():
    meta = both_paths(dated_image({0x010F: b"NIKON CORPORATION\x00\x00  ", 0x0110: "  NIKON Z 6\x00"}))
    assert (meta.make, meta.model) == ("NIKON CORPORATION", "NIKON Z 6")


def test_metadata_version_makes_older_rows_re_read(folder, tiny_model_name):
    from indexer.images.metadata import METADATA_VERSION

    assert METADATA_VERSION >= 2
    index(folder, tiny_model_name)
    catalog_path = Library.open().catalog_path
    with raw_sqlite(catalog_path) as conn:  # rows as version 1 left them
        conn.execute("UPDATE images SET meta_version=?", (METADATA_VERSION - 1,))
    assert index(folder).metadata_filled == 5
    assert {row[0] for row in catalog_rows(catalog_path).values()} == {METADATA_VERSION}
    assert index(folder).metadata_filled == 0


@pytest.mark.parametrize("fmt", ["TIFF", "AVIF", "HEIF"])
def test_xmp_date_in_other_containers(fmt):
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif").register_heif_opener()
    buf = io.BytesIO()
    photo(0).save(buf, fmt, **({"tiffinfo": {700: XMP_DTO}} if fmt == "TIFF" else {"xmp": XMP_DTO}))
    meta = header_metadata(buf.getvalue())
    assert meta.taken_at == utc(2021, 5, 1, 8, 11, 12)
    assert (meta.taken_at_local, meta.taken_at_offset, meta.taken_at_source) == ("2021-05-01T10:11:12", "+02:00", "xmp")
