"""What a query pays for the vector index's upkeep at scale: catch-up of a file that is behind, and an exact
answer when the file is missing or damaged (queries never train or rebuild a large index).

Builds a catalog of N synthetic clustered unit vectors through the product's own write path, has the writer
build and save the index (IVF-SQ8 above the threshold), then times, each in a new process (warm page cache):
  * load: reading the saved index file (the floor of any cold query on this library);
  * behind: the file is K commits behind the catalog -> load + in-memory catch-up + one query (no training);
  * damaged: the file is corrupt -> the check fails and the query is answered exactly over the catalog;
  * repair: `Library.repair` rebuilds and saves (training), as `searchengine repair` does.
Last line JSON. Usage: scripts/bench_index_upkeep.py [--vectors 1000000] [--behind 1000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
from benchlib import synthetic

DIM = 512
CHUNK = 20_000

_PROBE = r"""
import json, sys, time
started = time.perf_counter()
from pathlib import Path
import numpy as np
from indexer.catalog.store import Catalog
from indexer.vectors.store import IndexStore
from indexer.vectors.index import VectorIndex
from searchengine.query.ranking import rank
folder, mode = Path(sys.argv[1]), sys.argv[2]
catalog = Catalog.open(folder / "catalog.sqlite", writable=False)
query = np.load(folder / "query.npy")
imported = time.perf_counter()
load = None
if mode != "damaged":  # the same process loads the file once on its own, to tell load from catch-up
    VectorIndex.load(folder / "vectors.faiss")
    load = time.perf_counter() - imported
notices = []
before_store = time.perf_counter()
store = IndexStore(catalog, folder / "vectors.faiss", query.shape[1], notices.append)
index = store.for_query()
ready = time.perf_counter()
scores, ids = rank(catalog, index, query, 20, query.shape[1])
done = time.perf_counter()
print(json.dumps({"imports_s": imported - started, "load_s": load, "index_ready_s": ready - before_store,
                  "query_s": done - ready, "total_s": done - before_store, "exact": index is None,
                  "top_id": int(ids[0][0]), "notices": notices}))
"""


def add_rows(catalog, vectors: np.ndarray, start: int, stop: int, chunk: int = CHUNK) -> None:
    """Rows start..stop-1 of `vectors` through Catalog.apply (the product's write path), `chunk` per transaction."""
    from indexer.catalog.store import StoredImage

    benchlib.write_rows(catalog, stop - start, lambda k: StoredImage(
        f"/synthetic/{(start + k) // 1000:05d}/{start + k:08d}.jpg".encode(), 1, 1,
        (start + k).to_bytes(16, "little"), vectors[start + k]), chunk)


def writer_build(folder: Path) -> float:
    from searchengine.library.api import Library

    started = time.perf_counter()
    Library.open(folder, notice=lambda _: None).repair()
    return time.perf_counter() - started


def probe(folder: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(folder), mode], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--behind", type=int, default=1000, help="rows committed after the index file was saved")
    parser.add_argument("--work", type=Path, default=None, help="folder for the scratch library (default: temp)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-upkeep-", dir=args.work))
    vectors, queries = synthetic(args.vectors + args.behind, 1)
    np.save(work / "query.npy", queries[:1])
    started = time.perf_counter()
    catalog = benchlib.synthetic_catalog(work / "catalog.sqlite", DIM)
    add_rows(catalog, vectors, 0, args.vectors)
    catalog.close()
    insert_s = time.perf_counter() - started
    build_s = writer_build(work)
    loaded = probe(work, "load")  # the saved file, up to date
    from indexer.catalog.store import Catalog

    catalog = Catalog.open(work / "catalog.sqlite", writable=True)
    add_rows(catalog, vectors, args.vectors, args.vectors + args.behind, chunk=max(args.behind, 1))  # one commit
    catalog.close()
    behind = probe(work, "behind")
    data = bytearray((work / "vectors.faiss").read_bytes())
    data[len(data) // 2] ^= 0x55
    (work / "vectors.faiss").write_bytes(bytes(data))
    damaged = probe(work, "damaged")
    repair_s = writer_build(work)
    shutil.rmtree(work)
    print(f"catalog insert {insert_s:.1f} s, writer build {build_s:.1f} s, load {loaded['load_s']:.2f} s, "
          f"behind by {args.behind}: ready {behind['index_ready_s']:.2f} s, damaged: exact answer "
          f"{damaged['total_s']:.2f} s, repair {repair_s:.1f} s", file=sys.stderr)
    benchlib.emit({"vectors": args.vectors, "behind_rows": args.behind, "catalog_insert_s": round(insert_s, 1),
                   "writer_build_s": round(build_s, 1), "load_s": round(loaded["load_s"], 3),
                   "behind_ready_s": round(behind["index_ready_s"], 3),
                   "behind_catch_up_beyond_load_s": round(behind["index_ready_s"] - behind["load_s"], 3),
                   "behind_query_s": round(behind["query_s"], 3), "behind_exact": behind["exact"],
                   "damaged_answer_s": round(damaged["total_s"], 3), "damaged_exact": damaged["exact"],
                   "damaged_notice": damaged["notices"][:1], "repair_s": round(repair_s, 1)})


if __name__ == "__main__":
    main()
