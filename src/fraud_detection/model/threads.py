"""Bounding the native thread pools (OpenMP, BLAS) used while training.

HistGradientBoosting fits with OpenMP, one thread per core by default. When other processes hold the cores, every
OpenMP barrier waits for descheduled threads and a fit can take many times longer with the same result. Training
under :func:`bounded_threads` caps every pool threadpoolctl knows (scikit-learn's OpenMP runtime and the BLAS
libraries) and joblib's workers (a random forest fits its trees through joblib) for the duration of the block.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from joblib import parallel_config
from joblib.parallel import get_active_backend
from threadpoolctl import threadpool_info, threadpool_limits


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def pool_threads() -> dict[str, int]:
    """Current thread count of each loaded native pool, keyed by ``<user_api>:<internal_api>`` (e.g. openmp)."""
    return {f"{p['user_api']}:{p['internal_api']}": int(p["num_threads"]) for p in threadpool_info()}


@contextmanager
def bounded_threads(threads: int) -> Iterator[int]:
    """Cap every native thread pool at ``threads`` inside the block.

    Args:
        threads: Maximum threads per pool (at least 1).

    Yields:
        The cap.

    Raises:
        ValueError: ``threads`` is below 1.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    with threadpool_limits(limits=threads), parallel_config(n_jobs=threads):
        yield threads


def joblib_workers() -> int:
    """Workers for an estimator's ``n_jobs``: the cap of an enclosing :func:`bounded_threads`, else every CPU."""
    n_jobs = get_active_backend()[1]
    return available_cpus() if n_jobs is None or n_jobs < 1 else int(n_jobs)
