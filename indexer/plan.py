"""Phase one of an index run: compare the folders with the catalog and decide what to do, without decoding.

The to-do list goes to a temporary file, so memory does not grow with the number of files.
"""
from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import IO, Callable, Iterator, Sequence

from indexer.catalog import Catalog, FailedFile, KnownFile
from indexer.scan import Excluder, FileEntry, FolderScan, scan_root

SkipFn = Callable[[bytes, str], None]


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
    removed_ids: list[int] = field(default_factory=list)
    removed_failures: list[bytes] = field(default_factory=list)
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


def make_plan(catalog: Catalog, roots: Sequence[bytes], exclude: Sequence[str], on_skip: SkipFn) -> Plan:
    plan = Plan(tempfile.TemporaryFile(prefix="searchengine-todo-"))
    excluded = Excluder(exclude)
    visited: set[tuple[int, int]] = set()
    for root in roots:
        seen_folders: set[bytes] = set()
        unlisted: list[bytes] = []
        for scan in scan_root(root, excluded, visited):
            if scan.error:
                on_skip(scan.folder, scan.error)
                unlisted.append(scan.folder)
                continue
            _plan_folder(catalog, scan, plan, on_skip)
            if not scan.single_file:
                seen_folders.add(scan.folder)
        if os.path.isdir(root):
            _plan_vanished_folders(catalog, root, seen_folders, unlisted, plan)
    return plan


def _plan_folder(catalog: Catalog, scan: FolderScan, plan: Plan, on_skip: SkipFn) -> None:
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
    plan.removed_ids.extend(k.id for p, k in known.items() if p not in present)
    plan.removed_failures.extend(p for p in failed if p not in present)


def _plan_file(entry: FileEntry, known: KnownFile | None, failed: KnownFile | None, plan: Plan) -> None:
    if known and (known.size, known.mtime_ns) == (entry.size, entry.mtime_ns):
        plan.unchanged += 1
    elif failed and not known and (failed.size, failed.mtime_ns) == (entry.size, entry.mtime_ns):
        plan.known_failed += 1  # unchanged bad file: not retried
    else:
        plan.add(Task(entry.path, known.id if known else None))


def _plan_vanished_folders(catalog: Catalog, root: bytes, seen: set[bytes], unlisted: list[bytes], plan: Plan) -> None:
    """Remove what the catalog holds in folders under `root` that no longer exist (or are now excluded)."""
    for folder in catalog.folders_under(root) - seen:
        if any(folder == u or folder.startswith(u.rstrip(b"/") + b"/") for u in unlisted):
            continue  # could not be listed this time: keep it rather than lose it
        known, failed = catalog.folder_state(folder)
        plan.removed_ids.extend(k.id for k in known.values())
        plan.removed_failures.extend(failed)


def _lstat(path: bytes) -> tuple[int, int]:
    try:
        info = os.lstat(path)
        return info.st_size, info.st_mtime_ns
    except OSError:
        return 0, 0
