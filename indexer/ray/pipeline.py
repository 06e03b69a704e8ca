"""Phase two of an index run on Ray: read -> hash -> decode as Ray Data tasks, encode in an actor pool,
commit batch by batch in this process exactly as the local pipeline does (one transaction per batch).
Videos come after the photos: each is sampled as a Ray task, and its frames encoded by this process's model.

Planning (plan.py) and committing (pipeline.BatchWriter, Catalog.apply) are the local path's own; so is the
decode (prepare.Preparer). Files are read on the workers: on a cluster they must see the same paths (shared
storage). Reuse by content hash needs the workers to read the catalog; where they cannot, files are encoded.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from indexer.catalog.moves import Claim
from indexer.catalog.store import Catalog
from indexer.images.decode import PreprocessConfig
from indexer.pipeline.local import BatchWriter, Encoder, IndexOptions, IndexSummary, Reporter, embedding_run
from indexer.pipeline.plan import Plan, Task
from indexer.pipeline.prepare import Prepared, Preparer
from indexer.pipeline.video import VideoOptions
from indexer.ray.session import RayCluster, ray_session
from indexer.video.files import is_video_name

WINDOW = 20_000  # tasks per Ray dataset: the driver never holds the whole to-do list
MAX_ACTOR_CPUS = 8  # torch threads per encoder actor on a CPU cluster


@dataclass(frozen=True)
class _Setup:
    catalog_path: str
    cfg: PreprocessConfig
    dim: int
    model: str
    pretrained: str
    precision: str
    video: VideoOptions = VideoOptions()


def run_ray_pipeline(catalog: Catalog, plan: Plan, encoder: Callable[[], Encoder], options: IndexOptions,
                     reporter: Reporter, after_commit: Callable[[], None], address: str) -> IndexSummary:
    """As pipeline.run_pipeline, with the work done on Ray (`address`: `auto` or a cluster address)."""
    with embedding_run(catalog, plan, options, reporter, after_commit) as writer:
        if plan.todo_count:
            meta = catalog.meta()
            # The driver's model gives the preprocessing config (and a new library's text tower).
            setup = _Setup(str(catalog.path), encoder().preprocess_cfg, int(meta["dim"]), meta["model"],
                           meta["pretrained"], meta.get("image_precision", "fp32"), options.video or VideoOptions())
            videos: list[Task] = []
            with ray_session(address) as cluster:
                for window in _windows(_photos(plan.tasks(), videos)):
                    for batch in _results(window, setup, cluster, options.batch_size):
                        _commit(batch, writer, reporter)
                _videos(videos, setup, cluster, encoder(), options.batch_size, writer, reporter)
    return writer.summary


def _photos(tasks: Iterable[Task], videos: list[Task]) -> Iterator[Task]:
    """The photo tasks; video tasks are set aside in `videos` (a few per library, each a task of its own)."""
    for task in tasks:
        if is_video_name(task.path):
            videos.append(task)
        else:
            yield task


def _videos(tasks: list[Task], setup: _Setup, cluster: RayCluster, model: Encoder, batch_size: int,
            writer: BatchWriter, reporter: Reporter) -> None:
    """Each video decoded (sampled by keyframe seek) as a Ray task, its frames encoded here and committed whole:
    a video's frames are one unit, so they are not spread over the actor pool's batches."""
    import ray

    prepare = ray.remote(num_cpus=1, max_retries=3)(_prepare_video)
    pending = list(reversed(tasks))
    inflight: list = []
    while pending or inflight:
        while pending and len(inflight) < max(1, cluster.cpus):
            inflight.append(prepare.remote(pending.pop(), setup))
        ready, inflight = ray.wait(inflight, num_returns=1)
        prepared = ray.get(ready[0])
        if prepared.error is not None:
            reporter.skipped(prepared.task.path, prepared.error)
            writer.fail(prepared)
        else:
            writer.store_video(prepared, model, batch_size)
        reporter.advance(1)


def _prepare_video(task: Task, setup: _Setup) -> Prepared:
    return _preparer(setup)(task)


def _preparer(setup: _Setup) -> Preparer:
    preparer = _preparers.get(setup)
    if preparer is None:
        from indexer.pipeline.prepare import lowest_priority

        lowest_priority()  # as locally: the reads yield the cores to the model
        preparer = _preparers[setup] = _ReusingWhereItCan(setup.catalog_path, setup.cfg, setup.video)
    return preparer


def _windows(tasks: Iterable[Task]) -> Iterator[list[Task]]:
    iterator = iter(tasks)
    while window := list(itertools.islice(iterator, WINDOW)):
        yield window


def _results(tasks: list[Task], setup: _Setup, cluster: RayCluster, batch_size: int) -> Iterator[dict]:
    """Batches of results (numpy columns) for `tasks`, streamed back as the actor pool produces them.

    Ray Data's defaults are the retries wanted: a task whose worker died is run again (max_retries=-1), a dead
    actor is restarted and its batch retried (max_restarts=-1, max_task_retries=-1)."""
    import ray.data

    rows = [{"path": t.path, "existing_id": -1 if t.existing_id is None else t.existing_id} for t in tasks]
    actors, actor_resources, threads = _actor_pool(cluster)
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 200)))
    # A concurrency cap unlike the actor pool's keeps Ray Data from fusing the reads into the encoder actors,
    # where decoding would wait for the model instead of running beside it.
    dataset = dataset.map_batches(_prepare_batch, batch_size=batch_size, batch_format="numpy",
                                  fn_kwargs={"setup": setup}, num_cpus=1, concurrency=max(cluster.cpus, actors + 1))
    dataset = dataset.map_batches(_EncodeActor, batch_size=batch_size, batch_format="numpy",
                                  fn_constructor_kwargs={"setup": setup, "threads": threads},
                                  compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors), **actor_resources)
    yield from dataset.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1)


def _actor_pool(cluster: RayCluster) -> tuple[int, dict[str, float], int]:
    """(actors, resources per actor, torch threads per actor): one per GPU, else CPU actors leaving a CPU
    for the read tasks (a pool that takes every CPU starves them)."""
    if cluster.gpus:
        return cluster.gpus, {"num_gpus": 1, "num_cpus": 1}, 0
    spare = max(1, cluster.cpus - 1)
    per_actor = min(MAX_ACTOR_CPUS, spare)
    # On one machine the reads run at idle priority (as locally), so the model may use every core meanwhile.
    threads = cluster.cpus if cluster.local else per_actor
    return max(1, spare // per_actor), {"num_cpus": per_actor}, threads


def _commit(batch: dict[str, np.ndarray], writer: BatchWriter, reporter: Reporter) -> None:
    """Record one batch of results exactly as the local pipeline does."""
    summary = writer.summary
    for n in range(len(batch["path"])):
        task = Task(bytes(batch["path"][n]), None if batch["existing_id"][n] < 0 else int(batch["existing_id"][n]))
        prepared = Prepared(task, int(batch["size"][n]), int(batch["mtime_ns"][n]), bytes(batch["content_hash"][n]),
                            error=str(batch["error"][n]) or None, vanished=bool(batch["vanished"][n]))
        if batch["claim_kind"][n]:  # a moved file takes over its old entry, as locally
            prepared.claim = Claim(str(batch["claim_kind"][n]), int(batch["claim_id"][n]),
                                   bytes(batch["claim_old_path"][n]))
        if prepared.error is not None:
            reporter.skipped(task.path, prepared.error)
            writer.fail(prepared)
        else:
            if batch["encoded"][n]:
                summary.encoded += 1
                summary.device, summary.compute_precision = str(batch["device"][n]), str(batch["compute_precision"][n])
            else:
                summary.reused += 1
            writer.store(prepared, batch["embedding"][n])
        reporter.advance(1)


# --- worker side ------------------------------------------------------------------------------------------------
_preparers: dict[_Setup, Preparer] = {}


def _prepare_batch(batch: dict[str, np.ndarray], setup: _Setup) -> dict[str, np.ndarray]:
    """Read, hash and decode (or reuse by content hash) a batch of files on a worker."""
    preparer = _preparer(setup)
    results = [preparer(Task(bytes(p), None if i < 0 else int(i))) for p, i in zip(batch["path"], batch["existing_id"])]
    size = setup.cfg.image_size
    pixels = np.zeros((len(results), 3, size, size), np.float32)
    known = np.zeros((len(results), setup.dim), np.float32)
    for n, result in enumerate(results):
        if result.pixels is not None:
            pixels[n] = result.pixels
        elif result.embedding is not None:
            known[n] = result.embedding
    return {
        "path": batch["path"], "existing_id": batch["existing_id"],
        "size": np.array([r.size for r in results], np.int64),
        "mtime_ns": np.array([r.mtime_ns for r in results], np.int64),
        "content_hash": np.array([r.content_hash for r in results], object),
        "error": np.array([r.error or "" for r in results], object),
        "vanished": np.array([r.vanished for r in results], bool),
        "encoded": np.array([r.pixels is not None for r in results], bool),
        "claim_kind": np.array([r.claim.kind if r.claim else "" for r in results], object),
        "claim_id": np.array([r.claim.id if r.claim else -1 for r in results], np.int64),
        "claim_old_path": np.array([r.claim.old_path if r.claim else b"" for r in results], object),
        "pixels": pixels, "embedding": known,
    }


class _ReusingWhereItCan(Preparer):
    """A Preparer that encodes rather than fails where this worker cannot read the catalog (another machine)."""

    def _read_only_catalog(self) -> Any:
        try:
            return super()._read_only_catalog()
        except Exception:
            return _NoCatalog()


class _NoCatalog:
    def reusable(self, content_hash: bytes) -> None:
        return None

    def reusable_video(self, content_hash: bytes) -> None:
        return None


class _EncodeActor:
    """Holds the library's model on a worker and encodes decoded batches, on the worker's best device (its GPU
    when it has one, with the same checked half precision and out-of-memory splitting as a local run)."""

    def __init__(self, setup: _Setup, threads: int):
        import torch

        from indexer.model.clip import ModelSpec, load_model
        from indexer.model.device import device_label

        self.model = load_model(ModelSpec(setup.model, setup.pretrained), setup.precision, device="auto")
        if threads:
            torch.set_num_threads(threads)
        self.device = device_label(self.model.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        encode = batch["encoded"]
        embeddings = batch["embedding"].copy()
        if encode.any():
            embeddings[encode] = self.model.encode_pixels(batch["pixels"][encode])
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["embedding"] = embeddings
        # What encoded this batch, for the run's summary and the catalog (the driver holds no model).
        out["device"] = np.array([self.device] * len(encode), object)
        out["compute_precision"] = np.array([self.model.compute_precision] * len(encode), object)
        return out
