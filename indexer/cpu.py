"""How many cores this process may use (its CPU affinity, which containers and taskset narrow)."""
from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity API on this platform
        return max(1, os.cpu_count() or 1)


INDEX_NICENESS = 10  # an index run's priority: behind answering queries (and a user's other programs)


def yield_to_queries() -> None:
    """Run this thread, and the threads it starts from now on (torch's, decode workers'), at INDEX_NICENESS.

    Under contention the scheduler then gives queries (a server's request threads, a `search` process) the cores
    first; with nothing else to run, a niced thread runs as fast as ever, so an index run alone loses nothing.
    On Linux a priority is per thread (PRIO_PROCESS with the thread's id); elsewhere this lowers the process's.
    """
    import threading

    try:
        target = threading.get_native_id() if os.uname().sysname == "Linux" else 0
        current = os.getpriority(os.PRIO_PROCESS, target)
        if current < INDEX_NICENESS:
            os.setpriority(os.PRIO_PROCESS, target, INDEX_NICENESS)
    except (AttributeError, OSError):  # no priorities here, or not allowed: index at the priority we have
        pass


BLAS_PINNED = False  # True once pin_blas_to_one_thread ran before any BLAS was loaded


def pin_blas_to_one_thread() -> None:
    """Called by the CLI before numpy loads: every BLAS loaded from now on runs one thread (a query's products
    are a few rows by thousands; OpenBLAS's own threads cost more than they give, ~1 s against 0.2 s per query
    on a busy 2-core box). Then the text tower need not limit BLAS threads per call (threadpoolctl, ~5 ms of a
    new process's first query). A user's own OPENBLAS_NUM_THREADS is kept."""
    import sys

    global BLAS_PINNED
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    BLAS_PINNED = BLAS_PINNED or (os.environ["OPENBLAS_NUM_THREADS"] == "1" and "numpy" not in sys.modules)
