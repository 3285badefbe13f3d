import numpy as np
import pytest
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.metrics import beyond_accuracy, ranking_metrics


def _relevant(rows, n_items=10):
    data = [(u, i) for u, items in enumerate(rows) for i in items]
    u, i = zip(*data, strict=True) if data else ((), ())
    return sp.csr_matrix((np.ones(len(u)), (u, i)), shape=(len(rows), n_items))


def test_metrics_match_hand_computation():
    # User 0: relevant {1, 5}; list [1, 2, 5] → hits at ranks 1 and 3.
    # User 1: relevant {7}; list [3, 4, 7] → hit at rank 3.
    # User 2: nothing relevant → excluded from the averages.
    recs = np.array([[1, 2, 5], [3, 4, 7], [0, 1, 2]])
    m = ranking_metrics(recs, _relevant([[1, 5], [7], []]), k=3)
    assert m["n_users"] == 2
    assert m["precision"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["recall"] == pytest.approx((1.0 + 1.0) / 2)
    f1_u0 = 2 * (2 / 3) * 1 / (2 / 3 + 1)
    f1_u1 = 2 * (1 / 3) * 1 / (1 / 3 + 1)
    assert m["f1"] == pytest.approx((f1_u0 + f1_u1) / 2)
    ndcg_u0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    ndcg_u1 = (1 / np.log2(4)) / 1
    assert m["ndcg"] == pytest.approx((ndcg_u0 + ndcg_u1) / 2)
    ap_u0 = (1 / 1 + 2 / 3) / 2
    ap_u1 = (1 / 3) / 1
    assert m["map"] == pytest.approx((ap_u0 + ap_u1) / 2)
    assert m["hit_rate"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 / 3) / 2)


def test_precision_divides_by_k_not_by_relevant_count():
    # One relevant item, found at rank 1 of 10: precision 0.1 (implicit's "precision" says 1.0).
    recs = np.arange(10)[None, :]
    m = ranking_metrics(recs, _relevant([[0]], n_items=20), k=10)
    assert m["precision"] == pytest.approx(0.1)
    assert m["recall"] == pytest.approx(1.0)


def test_empty_slots_never_count_as_hits():
    recs = np.array([[-1, -1, 0]])
    m = ranking_metrics(recs, _relevant([[0, 9]]), k=3)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx(1 / 3)


def test_beyond_accuracy():
    recs = np.array([[0, 1], [0, 2]])
    categories = np.array([0, 0, 1, 1])
    popularity = np.array([0.5, 0.25, 0.25, 0.0])
    m = beyond_accuracy(recs, categories, popularity, k=2)
    assert m["coverage"] == pytest.approx(3 / 4)
    assert m["diversity"] == pytest.approx(0.5)  # one of the two lists mixes categories
    assert m["novelty"] == pytest.approx(np.mean([1, 2, 1, 2]))
