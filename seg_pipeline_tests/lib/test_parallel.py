import numpy as np

from seg_pipeline.lib.parallel import each_in_threads


def test_results_keep_the_order_of_the_items():
    def work(i):
        return float(np.sort(np.arange(i, i + 1000) % 7).sum()) + i

    items = list(range(40))
    assert each_in_threads(work, items) == [work(i) for i in items]
    assert each_in_threads(work, []) == []
