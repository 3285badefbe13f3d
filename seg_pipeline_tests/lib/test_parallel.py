import threading
import time

import numpy as np
import pytest

from seg_pipeline.lib.parallel import each_in_threads, in_background


def test_results_keep_the_order_of_the_items():
    def work(i):
        return float(np.sort(np.arange(i, i + 1000) % 7).sum()) + i

    items = list(range(40))
    assert each_in_threads(work, items) == [work(i) for i in items]
    assert each_in_threads(work, []) == []


def test_background_work_runs_beside_the_block_and_is_awaited_even_when_it_fails():
    started, release, done = threading.Event(), threading.Event(), []

    def work(tag):
        started.set()
        release.wait(5)
        time.sleep(0.05)
        done.append(tag)
        return tag

    with in_background(work, "a") as future:
        assert started.wait(5)  # running while the block runs
        release.set()
    assert done == ["a"] and future.result() == "a"

    started.clear()
    release.clear()
    with pytest.raises(RuntimeError), in_background(work, "b"):
        started.wait(5)
        release.set()
        raise RuntimeError("the block failed")
    assert done == ["a", "b"]  # leaving the failed block still waited for the work
