"""Connect to Ray for an index run: start a local instance (`auto`) that leaves nothing behind, or join a cluster.

Ray is imported only here and in ray_pipeline.py, inside functions: it is an optional extra.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from indexer.cpu import usable_cores
from indexer.errors import SearchEngineError
from indexer.ray.stderr_filter import filtered_stderr
from indexer.ray.watchdog import MARKER_ENV, instance_environ

AUTO = "auto"
OBJECT_STORE_CAP = 2 << 30  # decoded pixels in flight are bounded by Ray Data's backpressure; 2 GB is plenty
QUIET_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


class RayUnavailableError(SearchEngineError):
    """Ray (the `ray` extra) is not installed, or the cluster cannot be reached."""


@dataclass
class RayCluster:
    """What the pipeline sizes itself by: the cluster's resources and whether we started it here."""

    cpus: int
    gpus: int
    local: bool


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError("--ray needs the ray extra: pip install 'searchengine[ray]'") from None
    return ray


@contextmanager
def ray_session(address: str) -> Iterator[RayCluster]:
    """Ray for one run. `auto`: a local instance sized to this machine, ended (with a watchdog for a killed
    driver) when the run ends; an address: join that cluster and leave it as it was. An already connected
    Ray (a caller's own `ray.init`) is used as it is."""
    ray = import_ray()
    _quiet_ray()
    if ray.is_initialized():
        yield _cluster(ray, local=False)
        return
    with filtered_stderr():
        if address == AUTO:
            with _local_instance(ray) as cluster:
                yield cluster
        else:
            with _joined(ray, address) as cluster:
                yield cluster


@contextmanager
def _joined(ray: Any, address: str) -> Iterator[RayCluster]:
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError depending on how it fails
        raise RayUnavailableError(f"cannot join the Ray cluster at {address}: {_first_line(exc)}") from None
    try:
        yield _cluster(ray, local=False)
    finally:
        ray.shutdown()


@contextmanager
def _local_instance(ray: Any) -> Iterator[RayCluster]:
    marker = uuid.uuid4().hex
    watchdog = subprocess.Popen([sys.executable, "-m", "indexer.ray.watchdog", marker, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True,
                                env={k: v for k, v in os.environ.items() if k != MARKER_ENV})
    try:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        with _environ(instance_environ(marker)):  # inherited by every process the instance starts
            ray.init(address="local", num_cpus=usable_cores(), object_store_memory=_object_store_bytes(),
                     include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     _node_ip_address="127.0.0.1")
        yield _cluster(ray, local=True)
    finally:
        try:
            ray.shutdown()
        finally:
            watchdog.stdin.close()  # the watchdog ends what ray.shutdown left (its agents), then exits
            try:
                watchdog.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block, then os.environ as it was."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _cluster(ray: Any, local: bool) -> RayCluster:
    resources = ray.cluster_resources()
    return RayCluster(int(resources.get("CPU", 1)), int(resources.get("GPU", 0)), local)


def _object_store_bytes() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return OBJECT_STORE_CAP
    return max(256 << 20, min(OBJECT_STORE_CAP, total // 5))


def _quiet_ray() -> None:
    """Ray's own progress bars and execution logs off: the run's progress bar and summary are ours."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import warnings

    from ray.data import DataContext

    with warnings.catch_warnings():  # reading DataContext's deprecated fields warns
        warnings.simplefilter("ignore")
        context = DataContext.get_current()
        context.enable_progress_bars = False
        for flag in ("print_on_execution_start", "enable_operator_progress_bars", "verbose_stats_logs"):
            if hasattr(context, flag):
                setattr(context, flag, False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
