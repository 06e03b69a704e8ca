"""`export` and `import`: our Parquet export round-trips, clip-retrieval output imports, twice adds nothing,
a model or width that does not fit is refused with the library unchanged."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow: pip install -e '.[parquet]' (or '.[test]')")
import pyarrow.parquet as pq  # noqa: E402

from helpers.catalog import catalog_meta, catalog_query  # noqa: E402
from helpers.cli import cli, summary_of  # noqa: E402
from helpers.images import make_photos  # noqa: E402
from indexer.errors import ModelMismatchError, SearchEngineError  # noqa: E402
from indexer.exchange.export import export_parquet  # noqa: E402
from indexer.pipeline.local import IndexOptions  # noqa: E402
from searchengine.library.api import Library  # noqa: E402


def _rows(library: Path) -> dict[bytes, tuple]:
    return {p: (s, m, h, np.frombuffer(e, np.float32)) for p, s, m, h, e in
            catalog_query(library, "SELECT path, size, mtime_ns, content_hash, embedding FROM images")}


def _seq(library: Path) -> int:
    return int(catalog_meta(library)["seq"])


@pytest.fixture
def indexed(isolated, tiny_model_name) -> tuple[Path, list[Path]]:
    files = make_photos(isolated / "photos", 12)
    Library.open(isolated / "source").index([str(isolated / "photos")], model=tiny_model_name,
                                            options=IndexOptions(batch_size=4, workers=0))
    return isolated / "source", files


def test_export_round_trips_through_import(indexed, isolated):
    source, files = indexed
    export = summary_of(cli("export", isolated / "out", "--library", source, "--json"))
    assert export["rows"] == len(files)
    parquet = pq.ParquetFile(export["file"])
    assert parquet.schema_arrow.metadata[b"searchengine.dim"] == b"32"
    assert parquet.schema_arrow.field("embedding").type.value_type == pa.float32()

    first = summary_of(cli("import", isolated / "out", "--library", isolated / "copy", "--json"))
    assert (first["added"], first["already"], first["without_file"]) == (len(files), 0, 0)
    again = summary_of(cli("import", isolated / "out", "--library", isolated / "copy", "--json"))
    assert (again["added"], again["already"]) == (0, len(files))
    theirs, mine = _rows(source), _rows(isolated / "copy")
    assert mine.keys() == theirs.keys()
    for path, (size, mtime, digest, vector) in mine.items():
        assert (size, mtime, digest) == theirs[path][:3]
        assert np.array_equal(vector, theirs[path][3])
    # The copy answers like the original, and an index run over the folder re-encodes nothing.
    copy = Library.open(isolated / "copy")
    assert copy.search(image=str(files[3]), limit=1)[0].path == str(files[3])
    rerun = copy.index([str(isolated / "photos")])
    assert (rerun.unchanged, rerun.encoded) == (len(files), 0)


def test_export_writes_row_groups(indexed, isolated):
    from indexer.catalog.store import Catalog

    catalog = Catalog.open(indexed[0] / "catalog.sqlite", writable=False)
    try:
        summary = export_parquet(catalog, isolated / "small-groups", row_group=5)
    finally:
        catalog.close()
    assert pq.ParquetFile(summary.file).metadata.num_row_groups == 3  # 12 rows, 5 at a time


def _clip_retrieval(folder: Path, parts: list[tuple[list[str], np.ndarray]]) -> Path:
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    for n, (paths, vectors) in enumerate(parts):
        np.save(folder / "img_emb" / f"img_emb_{n}.npy", vectors)
        pq.write_table(pa.table({"image_path": paths, "caption": ["x"] * len(paths)}),
                       folder / "metadata" / f"metadata_{n}.parquet")
    return folder


def test_clip_retrieval_output_imports(indexed, isolated, tiny_model_name):
    source, files = indexed
    stored = _rows(source)
    vectors = np.stack([stored[os.fsencode(f)][3] for f in files]) * 3.0  # not normalised, as some writers leave them
    absent = [str(isolated / "elsewhere" / f"gone{n}.jpg") for n in range(3)]
    planted = np.random.default_rng(1).normal(size=(3, 32)).astype(np.float16)
    folder = _clip_retrieval(isolated / "cr", [([str(f) for f in files[:7]], vectors[:7].astype(np.float16)),
                                               ([str(f) for f in files[7:]] + absent,
                                                np.concatenate([vectors[7:].astype(np.float16), planted]))])

    args = ["import", folder, "--library", isolated / "strict", "--model", tiny_model_name, "--json"]
    strict = summary_of(cli(*args, "--require-files"))
    assert (strict["added"], strict["refused"]) == (len(files), 3)

    lib = Library.open(isolated / "imported")
    summary = lib.import_embeddings([str(folder)], model=tiny_model_name)
    assert (summary.added, summary.without_file) == (len(files) + 3, 3)
    rows = _rows(isolated / "imported")
    for path in files:  # the local file's identity and a normalised vector close to the original (float16)
        size, mtime, digest, vector = rows[os.fsencode(path)]
        assert (size, mtime, digest) == stored[os.fsencode(path)][:3]
        assert abs(np.linalg.norm(vector) - 1) < 1e-5
        assert float(vector @ stored[os.fsencode(path)][3]) > 0.999
    for n, path in enumerate(absent):  # not on this machine, still found by its vector
        query = planted[n].astype(np.float32) / np.linalg.norm(planted[n].astype(np.float32))
        assert lib.search_vector(query, limit=1)[0].path == path
    assert lib.import_embeddings([str(folder)], model=tiny_model_name).added == 0


def test_mismatched_model_or_width_is_refused_and_changes_nothing(indexed, isolated, tiny_model_name, tmp_path):
    source, files = indexed
    before, seq = _rows(source), _seq(source)
    lib = Library.open(source)
    narrow = _clip_retrieval(isolated / "narrow", [([str(files[0])], np.ones((1, 16), np.float32))])
    with pytest.raises(ModelMismatchError, match="16-d"):
        lib.import_embeddings([str(narrow)], model=tiny_model_name)
    fitting = _clip_retrieval(isolated / "fitting", [([str(files[0]) + ".new"], np.ones((1, 32), np.float32))])
    with pytest.raises(ModelMismatchError, match="ViT-B-32"):
        lib.import_embeddings([str(fitting)], model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(SearchEngineError, match="--model"):
        lib.import_embeddings([str(fitting)])
    assert (_rows(source).keys(), _seq(source)) == (before.keys(), seq)
    result = cli("import", narrow, "--library", source, "--model", tiny_model_name)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert _seq(source) == seq
