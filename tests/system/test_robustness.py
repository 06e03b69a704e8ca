"""Indexing never loses or corrupts: SIGKILL at any moment, index-file damage, two writers, readers during
writes, a damaged catalog, a full disk. The kill tests run the real CLI in subprocesses."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers.catalog import raw_sqlite
from helpers.checks import check_complete, status_images
from helpers.cli import cli, run, start, summary_of
from helpers.faults import Kill, catalog_rows, copy_tree, integrity_ok, kill_group, saved_states
from helpers.images import make_photos
from indexer.errors import CatalogError
from indexer.vectors.index import VectorIndex

BATCH = 4
PHOTOS = 24
KILLS_PER_CHAIN = 5
# Seeded jitter moves the kill moments a little on every suite run, so runs add up to wider coverage.
SEED = int(os.environ.get("ROBUSTNESS_SEED", time.time_ns() % 100_000))

# Each chain kills successive index runs on one library, then lets a last one finish. `after` alone lands
# in start-up (imports, model load, catalog creation) or, on an existing library, in the scan and index
# repair; `committed=k` lands k files into the run, amid decode / encode / commit; `committed=-1` after the
# last batch, amid removals, the index save and (first time only, so a longer `extra` fits) the text-tower
# export. A run that ends before its kill does not count: the next one retries. Whenever a library has caught up,
# photos are added and removed (as between two cron runs), so every kill has work to interrupt.
CHAINS = {
    "in-process decode": ("0", [Kill(after=1.0), Kill(committed=1), Kill(after=0.4), Kill(committed=8),
                                Kill(committed=-1)]),
    "two workers": ("2", [Kill(after=2.5), Kill(committed=1, extra=0.05), Kill(after=0.8), Kill(committed=4),
                          Kill(committed=-1, extra=0.4)]),
    "late kills": ("0", [Kill(after=0.6), Kill(committed=5), Kill(committed=-1, extra=0.8), Kill(after=1.2),
                         Kill(committed=-1)]),
    "one worker": ("1", [Kill(after=1.5), Kill(committed=2, extra=0.1), Kill(committed=-1, extra=0.1),
                         Kill(after=0.3), Kill(committed=12)]),
}


class _Chain:
    """One library and its photo folder, changed between runs like a real collection."""

    def __init__(self, root: Path, name: str):
        self.folder, self.library = root / f"{name}-photos", root / f"{name}-library"
        self.files = set(make_photos(self.folder, PHOTOS))
        (self.folder / "notes.jpg").write_text("not an image\n")  # one failure, recorded once across the runs
        self.next_seed = 1000 + PHOTOS

    def progress(self) -> int:
        return len(self.raw_files() & set(catalog_rows(self.library)))

    def raw_files(self) -> set[bytes]:
        return {os.fsencode(p) for p in self.files}

    def change_if_caught_up(self) -> None:
        if self.progress() < len(self.files):
            return
        for path in sorted(self.files)[:2]:
            path.unlink()
            self.files.discard(path)
        self.files |= set(make_photos(self.folder, 6, first_seed=self.next_seed))
        self.next_seed += 6


def _kill_once(chain: _Chain, kill: Kill, args: list, log: Path) -> str:
    """Start an index run, kill its process group at `kill`, check what it left; returns a line for the log."""
    chain.change_if_caught_up()
    before = catalog_rows(chain.library)
    proc = start(*args, log=log)
    kill.wait(proc, chain.progress, len(chain.files))
    running = kill_group(proc)
    after = catalog_rows(chain.library)
    integrity_ok(chain.library)
    if after:  # readers work on whatever the kill left (a hot write-ahead log included)
        assert status_images(chain.library) == len(after)
    changed = {p for p in chain.raw_files() & set(before) if after.get(p) != before[p]}
    assert not changed, f"committed rows rewritten by a resumed run: {sorted(changed)[:3]}"
    outcome = "killed" if running else "finished"
    return f"{kill} {outcome}: rows {len(before)}->{len(after)}, {saved_states(chain.library)}"


def _run_chain(name: str, root: Path, model: str) -> list[str]:
    """The chain's kills (a run that ends first is retried), then a run to the end; returns the kills' log."""
    workers, kills = CHAINS[name]
    rng = random.Random(f"{SEED}-{name}")
    chain = _Chain(root, name.replace(" ", "-"))
    args = ["index", chain.folder, "--library", chain.library, "--batch-size", BATCH, "--workers", workers,
            "--json", "--model", model]
    log: list[str] = []
    for attempt in range(3 * len(kills)):
        done = sum(" killed: " in line for line in log)
        if done == len(kills):
            break
        kill = replace(kills[done], extra=kills[done].extra + rng.uniform(0, 0.1))
        log.append(_kill_once(chain, kill, args, root / f"{chain.library.name}-{attempt}"))
    before = set(catalog_rows(chain.library))
    summary = summary_of(cli(*args))
    assert summary["encoded"] == summary["added"] == len(chain.raw_files() - before), (summary, log)
    assert summary["failed"] == 1
    check_complete(chain.library, sorted(chain.files), failed=1)
    leftovers = [p.name for p in chain.library.iterdir() if p.name.startswith(".vectors.faiss")]
    assert not leftovers, f"temporary index files left behind: {leftovers}"
    return [line for line in log if " killed: " in line]


def test_sigkill_at_any_moment_then_resume(tiny_model_name, tmp_path):
    """20 kills over 4 libraries (two at a time), each followed by a resume; then a final run completes."""
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(_run_chain, name, tmp_path, tiny_model_name) for name in CHAINS}
        logs = {name: future.result() for name, future in futures.items()}
    print(f"seed {SEED}", *(f"{name}: {line}" for name, lines in logs.items() for line in lines), sep="\n")
    kills = sum(map(len, logs.values()))
    assert kills >= 4 * KILLS_PER_CHAIN, f"only {kills} runs were still going when killed (seed {SEED})"


# --- helpers for the in-process tests -------------------------------------------------------------------------
def answers(photos: Path) -> list:
    """What searches return now: a text query over everything and image queries, paths with scores."""
    found = [json.loads(run("search", "a photo", "--json", "--limit", "1000").stdout)]
    for name in ("p000.png", "p007.png", "sub/p004.png"):
        found.append(json.loads(run("search", "--image", photos / name, "--json").stdout))
    return found


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("searchengine: ")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_model_name) -> tuple[Path, Path]:
    """A library of 12 photos (three batches, so seq > 1), indexed once per module; tests work on copies."""
    root = tmp_path_factory.mktemp("template")
    make_photos(root / "photos", 12)
    run("index", root / "photos", "--library", root / "library", "--model", tiny_model_name, "--workers", "0",
        "--batch-size", "4")
    return root / "library", root / "photos"


@pytest.fixture
def library(template, isolated) -> tuple[Path, Path]:
    """(this test's copy of the template library, at the default location; the template's photos)."""
    folder, photos = template
    return copy_tree(folder, isolated / "library"), photos


# --- the derived index file: damage is detected, repaired from the catalog, and answers do not change ---------
def _flip(index_file: Path) -> None:
    data = bytearray(index_file.read_bytes())
    data[len(data) * 2 // 3] ^= 0x40
    index_file.write_bytes(bytes(data))


def _from_elsewhere(index_file: Path) -> None:
    """An index of other vectors, claiming a later state than the catalog has."""
    rng = np.random.default_rng(0)
    VectorIndex.build(32, np.arange(100, 105), rng.normal(size=(5, 32)).astype(np.float32), seq=10_000).save(index_file)


DAMAGE = {
    "missing": Path.unlink,
    "empty": lambda f: f.write_bytes(b""),
    "truncated header": lambda f: f.write_bytes(f.read_bytes()[:20]),
    "truncated payload": lambda f: f.write_bytes(f.read_bytes()[:-100]),
    "byte flipped": _flip,
    "garbage": lambda f: f.write_bytes(os.urandom(f.stat().st_size)),
    "from elsewhere": _from_elsewhere,
    "older than the catalog": None,  # a copy saved before four more photos were indexed
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_index_file_is_repaired_with_a_notice(library, isolated, damage):
    library, photos = library
    index_file = library / "vectors.faiss"
    older = index_file.read_bytes()
    if damage == "older than the catalog":
        make_photos(isolated / "more", 4, first_seed=5000)
        run("index", "more", "--workers", "0")
    before = answers(photos)
    if DAMAGE[damage]:
        DAMAGE[damage](index_file)
    else:
        index_file.write_bytes(older)
    first = run("search", "a photo", "--json", "--limit", "1000")
    lines = notices(first.stderr)
    assert len(lines) == 1 and str(index_file) in lines[0], first.stderr
    assert ("catching up" if DAMAGE[damage] is None else "rebuilding") in lines[0]
    assert answers(photos) == before
    assert not notices(run("search", "a photo").stderr)  # the reader saved the repaired file
    VectorIndex.load(index_file)


def test_search_repairs_in_memory_where_it_cannot_take_the_lock(library, monkeypatch):
    """A library folder the reader cannot write to (no lock file to be had): answers still come, from memory."""
    import indexer.lock

    library, photos = library
    before = answers(photos)
    (library / "vectors.faiss").unlink()

    class Unwritable:
        def __init__(self, path):
            self.path = path

        def acquire(self, timeout=None):
            raise PermissionError(errno.EACCES, "Permission denied", self.path)

    monkeypatch.setattr(indexer.lock, "FileLock", Unwritable)
    assert answers(photos) == before
    assert not (library / "vectors.faiss").exists()


def test_temporary_index_files_of_a_killed_run_are_cleared(library):
    library, photos = library
    dead = library / ".vectors.faiss.k1ll3d.tmp"
    dead.write_bytes(b"half an index")
    run("index", photos, "--workers", "0")
    assert not dead.exists()


def test_index_run_repairs_a_damaged_index_file(library):
    library, photos = library
    before = answers(photos)
    index_file = library / "vectors.faiss"
    index_file.write_bytes(index_file.read_bytes()[:-7])
    result = run("index", photos, "--workers", "0")
    assert len(notices(result.stderr)) == 1 and "truncated" in result.stderr
    assert answers(photos) == before


def test_index_file_writes_are_atomic(library, isolated):
    """A save that fails half-way (disk full) leaves the previous file whole and no temporary file."""
    import indexer.vectors.index

    library, _ = library
    index_file = library / "vectors.faiss"
    saved = index_file.read_bytes()
    make_photos(isolated / "more", 3, first_seed=6000)

    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(indexer.vectors.index.os, "fsync", no_space)
        result = run("index", "more", "--workers", "0", ok=False)
    assert result.exit_code != 0 and "No space left on device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert index_file.read_bytes() == saved
    assert sorted(p.name for p in library.iterdir() if p.name.startswith(".")) == []
    assert len(json.loads(run("search", "x", "--json", "--limit", "100").stdout)) == 15  # caught up


# --- two writers ----------------------------------------------------------------------------------------------
def test_two_index_runs_at_once(isolated, tiny_model_name):
    """The second waits for the first, saying so; together they index every file once."""
    files = make_photos(isolated / "photos", 24)
    (isolated / "empty").mkdir()
    run("index", "empty", "--model", tiny_model_name)  # an existing library: both reach the lock at once
    args = ["index", "photos", "--library", isolated / "library", "--batch-size", 4, "--json"]
    procs = [start(*args, log=isolated / f"writer{n}") for n in range(2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, (isolated / "writer0.err").read_text()
    summaries = [json.loads((isolated / f"writer{n}.out").read_text()) for n in range(2)]
    waited = ["waiting" in (isolated / f"writer{n}.err").read_text() for n in range(2)]
    assert sorted(waited) == [False, True]
    assert sum(s["added"] for s in summaries) == sum(s["encoded"] for s in summaries) == len(files)
    assert summaries[waited.index(True)]["unchanged"] == len(files)
    integrity_ok(isolated / "library")
    check_complete(isolated / "library", files, failed=0)


# --- readers while a writer commits ---------------------------------------------------------------------------
def test_search_and_status_during_an_index_run(isolated, tiny_model_name):
    """Readers answer from committed states only: whole batches, never fewer images than before."""
    batch, first = 3, 4
    files = make_photos(isolated / "photos", 40)
    run("index", *files[:first], "--model", tiny_model_name, "--workers", "0")  # so readers have a library
    library = isolated / "library"
    proc = start("index", "photos", "--library", library, "--batch-size", batch, "--workers", "0",
                 log=isolated / "writer")
    committed = {first + batch * k for k in range((40 - first) // batch + 1)}
    seen = []
    try:
        while proc.poll() is None:
            status = run("status", "--json")
            seen.append(json.loads(status.stdout)["images"])
            hits = json.loads(run("search", "a photo", "--json", "--limit", "1000").stdout)
            paths = [h["path"] for h in hits]
            assert len(paths) == len(set(paths))
            assert len(paths) in committed, len(paths)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, (isolated / "writer.err").read_text()
    assert len(set(seen)) >= 3, f"no state between the first and the last was observed: {seen}"
    assert seen == sorted(seen) and set(seen) <= committed, seen
    check_complete(library, files, failed=0)


# --- a damaged catalog: a clear error naming it, a non-zero exit, the file untouched ----------------------------
def _not_sqlite(catalog: Path) -> None:
    catalog.write_bytes(b"these are my holiday notes, not a database\n" * 50)


def _empty(catalog: Path) -> None:
    catalog.write_bytes(b"")


def _newer_schema(catalog: Path) -> None:
    with raw_sqlite(catalog) as conn:  # closed after: the last connection folds its write-ahead log into the file
        conn.execute("INSERT INTO migrations VALUES ('999_from_the_future', 0)")


CATALOG_DAMAGE = {
    "not sqlite": (_not_sqlite, "not a SQLite database"),
    "empty file": (_empty, "empty"),
    "newer schema": (_newer_schema, "newer searchengine"),
}
COMMANDS = (["index", "{photos}", "--workers", "0"], ["status"], ["search", "a photo"],
            ["search", "--image", "{photos}/p000.png"])


def _settled(catalog: Path) -> str:
    """Fold the write-ahead log into the catalog file (as a clean shutdown does); returns its digest."""
    with raw_sqlite(catalog) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert not Path(f"{catalog}-wal").exists()
    return sha256(catalog)


@pytest.mark.parametrize("damage", CATALOG_DAMAGE)
def test_damaged_catalog_is_refused_and_left_untouched(library, damage):
    library, photos = library
    catalog = library / "catalog.sqlite"
    make_damage, message = CATALOG_DAMAGE[damage]
    _settled(catalog)
    make_damage(catalog)
    digest = sha256(catalog)
    for args in COMMANDS:
        result = run(*(a.format(photos=photos) for a in args), ok=False)
        assert result.exit_code != 0, (args, result.stdout)
        assert str(catalog) in result.stderr and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert sha256(catalog) == digest, args


def test_truncated_catalog_is_refused_and_left_untouched(library):
    library, photos = library
    catalog = library / "catalog.sqlite"
    _settled(catalog)
    catalog.write_bytes(catalog.read_bytes()[:3 * 4096])
    digest = sha256(catalog)
    for args in COMMANDS:
        result = run(*(a.format(photos=photos) for a in args), ok=False)
        assert result.exit_code != 0 and str(catalog) in result.stderr and "malformed" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert sha256(catalog) == digest, args


def test_read_only_catalog_refuses_index_and_still_answers(library):
    library, photos = library
    catalog = library / "catalog.sqlite"
    run("status")  # settle any side files
    catalog.chmod(0o444)
    digest = sha256(catalog)
    result = run("index", photos, "--workers", "0", ok=False)
    assert result.exit_code != 0 and str(catalog) in result.stderr and "read-only" in result.stderr
    assert json.loads(run("status", "--json").stdout)["images"] == 12
    assert len(json.loads(run("search", "a photo", "--json", "--limit", "100").stdout)) == 12
    assert sha256(catalog) == digest


# --- disk full while committing ---------------------------------------------------------------------------------
def test_disk_full_while_committing_keeps_the_last_whole_batch(isolated, tiny_model_name):
    """SQLite's max_page_count stands in for a full disk after two batches: the run stops with a one-line error,
    the catalog holds exactly the batches committed before, and a later run with space completes."""
    import indexer.catalog.store
    from sqlalchemy import event

    files = make_photos(isolated / "photos", 40)
    committed: list[bytes] = []
    real_apply, real_engine = indexer.catalog.store.Catalog.apply, indexer.catalog.store._make_engine

    def apply(self, batch):
        seq = real_apply(self, batch)
        committed.extend(item.path for item in batch.stored)
        return seq

    def make_engine(*args, **kwargs):
        engine = real_engine(*args, **kwargs)

        @event.listens_for(engine, "begin")
        def disk_full(conn) -> None:
            if len(committed) >= 8:
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
                conn.exec_driver_sql(f"PRAGMA max_page_count={pages}")
        return engine

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(indexer.catalog.store.Catalog, "apply", apply)
        patch.setattr(indexer.catalog.store, "_make_engine", make_engine)
        result = run("index", "photos", "--model", tiny_model_name, "--workers", "0", "--batch-size", 4, ok=False)
    assert result.exit_code != 0
    assert "full" in result.stderr and "catalog.sqlite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    library = isolated / "library"
    integrity_ok(library)
    assert 8 <= len(committed) < len(files)
    assert sorted(catalog_rows(library)) == sorted(committed)
    summary = json.loads(run("index", "photos", "--workers", "0", "--json").stdout)
    assert summary["encoded"] == len(files) - len(committed)
    check_complete(library, files, failed=0)


# --- a run that dies while creating the library -------------------------------------------------------------
class _Killed(BaseException):
    """Stands in for SIGKILL at one exact moment (nothing after it runs, no cleanup code either)."""


def test_death_while_creating_the_library_leaves_none_or_all(isolated, tiny_model_name):
    import indexer.catalog.store

    files = make_photos(isolated / "photos", 4)
    real = indexer.catalog.store.Catalog.set_meta

    def set_meta(self, values):
        if "model" in values:
            raise _Killed()
        return real(self, values)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(_Killed):
        patch.setattr(indexer.catalog.store.Catalog, "set_meta", set_meta)
        run("index", "photos", "--model", tiny_model_name)
    run("index", "photos", "--model", tiny_model_name, "--workers", "0")
    check_complete(isolated / "library", files, failed=0)


def test_catalog_create_is_all_or_nothing(isolated, monkeypatch):
    import indexer.catalog.store

    path = isolated / "catalog.sqlite"

    def die(*_):
        raise _Killed()

    with pytest.MonkeyPatch.context() as patch, pytest.raises(_Killed):
        patch.setattr(indexer.catalog.store.os, "replace", die)
        indexer.catalog.store.Catalog.create(path, {"model": "m"})
    assert not path.exists()
    catalog = indexer.catalog.store.Catalog.create(path, {"model": "m"})  # clears what the dead attempt left
    assert catalog.meta()["model"] == "m"
    catalog.close()
    assert not [p.name for p in isolated.iterdir() if p.name.startswith(".catalog.sqlite.new")]
    with pytest.raises(CatalogError, match="already exists"):
        indexer.catalog.store.Catalog.create(path, {"model": "other"})


# --- memory: per-file state lives in the catalog and a temporary to-do file, not in the process -----------------
def test_index_memory_does_not_grow_with_the_number_of_files(isolated):
    """Plan and pipeline over 500 and 2500 files (empty ones: no model needed): Python's peak allocation barely
    moves, because folders are planned one at a time, the to-do list is on disk, and batches are committed."""
    import tracemalloc

    from indexer.catalog.store import Catalog
    from indexer.images.decode import PreprocessConfig
    from indexer.pipeline.local import IndexOptions, run_pipeline
    from indexer.pipeline.plan import make_plan

    class NoModel:
        preprocess_cfg = PreprocessConfig(224, (0.5,) * 3, (0.5,) * 3)

    class Quiet:
        def start(self, total): ...
        def skipped(self, path, reason): ...
        def advance(self, n): ...

    def peak(count: int) -> int:
        root = isolated / f"files{count}"
        for n in range(count):
            folder = root / f"f{n // 50:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{n:05d}-{'x' * 60}.jpg").touch()
        catalog = Catalog.create(isolated / f"catalog{count}.sqlite", {"dim": "32"})
        try:
            tracemalloc.start()
            plan = make_plan(catalog, [os.fsencode(root)], (), lambda *_: None, lambda *_: None)
            summary = run_pipeline(catalog, plan, NoModel, IndexOptions(batch_size=32, workers=0), Quiet(),
                                   lambda: None)
            plan.close()
            assert summary.failed == count
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            catalog.close()

    peak(50)  # one-time costs (imports, caches) out of the way
    small, large = peak(500), peak(2500)
    assert large < small + 200_000, (small, large)  # per-file objects for 2000 more files would be ~1 MB
