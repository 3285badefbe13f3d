"""Run independent numpy work items one per core.

numpy's matmul, partition and sort release the GIL, so threads give real parallelism without
copying arrays to other processes. BLAS is held to one thread inside, or two levels of threads
would fight over two cores. Each work item must write only its own slice of the output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from threadpoolctl import threadpool_limits


def each_in_threads(work: Callable, items: Iterable) -> list:
    """``[work(item) for item in items]``, one item per core at a time, results in order."""
    items = list(items)
    if len(items) <= 1:
        return [work(item) for item in items]
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(work, items))


@contextmanager
def in_background(work: Callable, *args) -> Iterator[Future]:
    """Run ``work(*args)`` on a second thread while the block runs; yields its future.

    Leaving the block waits for ``work``, also when the block fails, so nothing it writes
    lands after the caller has given up.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit(work, *args)
