"""One image's record (catalog.images): by id, by path, by a list of ids of any integer type and any length."""
from __future__ import annotations

import numpy as np

from helpers.synthetic import planted_library, unit
from indexer.catalog.images import record, records
from indexer.catalog.reads import INTS_PER_QUERY
from indexer.catalog.store import Catalog


def test_records_by_id_by_path_and_by_many_ids(isolated):
    vectors = unit(np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32))
    ids = planted_library(isolated / "lib", vectors)
    catalog = Catalog.open(isolated / "lib" / "catalog.sqlite", writable=False)
    one = record(catalog, image_id=ids[3])
    assert one is not None and one.id == ids[3] and record(catalog, path=one.path) == one
    assert record(catalog, image_id=2 ** 63) is None and record(catalog, image_id=-1) is None
    wanted = [np.int64(i) for i in ids] + [2 ** 63, -5] + list(range(10**6, 10**6 + INTS_PER_QUERY))
    found = records(catalog, wanted)  # numpy ints, out-of-range ids and more ids than one statement takes
    assert sorted(found) == ids and all(found[i].id == i for i in ids)
    assert found[ids[3]] == one
