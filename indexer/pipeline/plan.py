"""Phase one of an index run: compare the folders with the catalog and decide what to do, without decoding.

The to-do list goes to a temporary file, so memory does not grow with the number of files. Removals are
handed to `on_removals` folder by folder as they are found, so the caller can commit them before any
encoding starts: a vanished file is never searchable for the length of a run.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator, Sequence

from indexer.catalog.store import Catalog, FailedFile, KnownFile
from indexer.pipeline.scan import Excluder, FileEntry, FolderScan, scan_root

SkipFn = Callable[[bytes, str], None]
RemovalsFn = Callable[[list[int], list[bytes]], None]


@dataclass
class Task:
    """A file to read, hash and embed; `existing_id` is set when the path is already indexed (changed file)."""

    path: bytes
    existing_id: int | None


@dataclass
class Plan:
    todo: IO[bytes]
    todo_count: int = 0
    unchanged: int = 0
    known_failed: int = 0
    removed: int = 0
    new_failures: list[FailedFile] = field(default_factory=list)

    def add(self, task: Task) -> None:
        pickle.dump((task.path, task.existing_id), self.todo)
        self.todo_count += 1

    def tasks(self) -> Iterator[Task]:
        self.todo.seek(0)
        for _ in range(self.todo_count):
            yield Task(*pickle.load(self.todo))

    def close(self) -> None:
        self.todo.close()


@dataclass
class _Walk:
    """What all roots of one run share, so overlapping roots (repeats, nesting, links) count each folder once."""

    excluded: Excluder
    visited: set[tuple[int, int]] = field(default_factory=set)  # real folders walked, by (device, inode)
    seen: set[bytes] = field(default_factory=set)  # folders walked, by the path they were reached by
    unlisted: list[bytes] = field(default_factory=list)  # folders that could not be listed this time
    file_roots: set[tuple[int, int] | None] = field(default_factory=set)  # real files given as roots

    def covers(self, scan: FolderScan) -> bool:
        """True for a file root already planned: inside a walked folder, or the same file given twice."""
        if _key(scan.folder) in self.visited:
            return True
        key = _key(scan.files[0].path) if scan.files else None
        if key is not None and key in self.file_roots:
            return True
        self.file_roots.add(key)
        return False


def make_plan(catalog: Catalog, roots: Sequence[bytes], exclude: Sequence[str], on_skip: SkipFn,
              on_removals: RemovalsFn) -> Plan:
    """Folder roots are walked before file roots, so a file inside a walked folder is planned once."""
    plan = Plan(tempfile.TemporaryFile(prefix="searchengine-todo-"))
    walk = _Walk(Excluder(exclude))
    unique = list(dict.fromkeys(roots))
    # A folder reached under two names (a link) is walked under the first; roots the catalog already
    # holds files under go first, so such a folder keeps the names it is indexed under.
    folders = sorted((r for r in unique if os.path.isdir(r)), key=lambda r: not catalog.folders_under(r))
    for root in folders + [r for r in unique if r not in folders]:
        for scan in scan_root(root, walk.excluded, walk.visited):
            if scan.error:
                on_skip(scan.folder, scan.error)
                walk.unlisted.append(scan.folder)
            elif scan.single_file and walk.covers(scan):
                continue
            else:
                _plan_folder(catalog, scan, plan, on_skip, on_removals)
                if not scan.single_file:
                    walk.seen.add(scan.folder)
    for root in folders:
        _plan_vanished_folders(catalog, root, walk, plan, on_removals)
    return plan


def _key(path: bytes) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _plan_folder(catalog: Catalog, scan: FolderScan, plan: Plan, on_skip: SkipFn, on_removals: RemovalsFn) -> None:
    known, failed = catalog.folder_state(scan.folder)
    for entry in scan.files:
        _plan_file(entry, known.get(entry.path), failed.get(entry.path), plan)
    for path, reason in scan.problems:
        on_skip(path, reason)
        size, mtime_ns = _lstat(path)
        plan.new_failures.append(FailedFile(path, size, mtime_ns, reason))
    if scan.single_file:
        return
    present = {e.path for e in scan.files} | {p for p, _ in scan.problems}
    gone = [k for p, k in known.items() if p not in present]
    _remove(plan, on_removals, gone, [p for p in failed if p not in present])


def _plan_file(entry: FileEntry, known: KnownFile | None, failed: KnownFile | None, plan: Plan) -> None:
    if known and (known.size, known.mtime_ns) == (entry.size, entry.mtime_ns):
        plan.unchanged += 1
    elif failed and not known and (failed.size, failed.mtime_ns) == (entry.size, entry.mtime_ns):
        plan.known_failed += 1  # unchanged bad file: not retried
    else:
        plan.add(Task(entry.path, known.id if known else None))


def _plan_vanished_folders(catalog: Catalog, root: bytes, walk: _Walk, plan: Plan, on_removals: RemovalsFn) -> None:
    """Remove what the catalog holds in folders under `root` that this run did not walk.

    Such a folder is gone, now excluded, or the same real folder as one walked under another name (a link):
    its files are then indexed once, under the name walked. Folders that could not be listed are kept.
    """
    for folder in sorted(catalog.folders_under(root) - walk.seen):
        if any(folder == u or folder.startswith(u.rstrip(b"/") + b"/") for u in walk.unlisted):
            continue  # could not be listed this time: keep it rather than lose it
        known, failed = catalog.folder_state(folder)
        _remove(plan, on_removals, list(known.values()), list(failed))


def _remove(plan: Plan, on_removals: RemovalsFn, files: list[KnownFile], failures: list[bytes]) -> None:
    """Remove indexed files (every row of each: a video's segments too) and failures that are gone."""
    if files or failures:
        plan.removed += len(files)
        on_removals([i for known in files for i in known.ids], failures)


def _lstat(path: bytes) -> tuple[int, int]:
    try:
        info = os.lstat(path)
        return info.st_size, info.st_mtime_ns
    except OSError:
        return 0, 0
