"""The newer candidates, business rules and the cold-start path, on matrices with known answers."""

import copy
import types

import numpy as np
import pandas as pd
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.blends import HybridRecommender
from seg_pipeline.lib.recommendations.content import ContentRecommender
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.lists import build_lists, has_bought
from seg_pipeline.lib.recommendations.mlflow_export import HistoryRecommender, export_model
from seg_pipeline.lib.recommendations.neighbours import ItemKNNRecommender
from seg_pipeline.lib.recommendations.popularity import (
    PopularityRecommender,
    SegmentPopularityRecommender,
)
from seg_pipeline.lib.recommendations.reasons import Reason


def _data(dense, **extra):
    m = sp.csr_matrix(np.asarray(dense, dtype=np.float32))
    return InteractionMatrix(
        user_ids=np.array([f"u{i}" for i in range(m.shape[0])], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(m.shape[1])], dtype=object),
        weights=m,
        purchased=m.copy(),
        **extra,
    )


def test_recent_window_changes_popularity():
    dense = [[1, 1, 0], [1, 0, 1], [0, 0, 1]]
    days = sp.csr_matrix(np.array([[100, 5, 0], [100, 0, 3], [0, 0, 2]], dtype=np.float32))
    data = _data(dense, days_ago=days)
    assert PopularityRecommender().fit(data).popularity_.argmax() == 0  # item 0: 2 buyers, old
    assert PopularityRecommender(window_days=30).fit(data).popularity_.argmax() == 2  # recent


def test_segment_popularity_uses_the_customers_segment():
    dense = [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    data = _data(dense, user_segments=np.array([0, 0, 1, 1, 1, -1]), segment_names=["a", "b"])
    model = SegmentPopularityRecommender().fit(data)
    top = model.recommend(np.arange(6), sp.csr_matrix((6, 4)), 1).items[:, 0]
    assert top.tolist() == [0, 0, 1, 1, 1, 1]  # the segment-less customer gets the shop's top


def test_content_model_reaches_items_nobody_bought():
    texts = np.array(
        ["red wool scarf", "blue wool scarf", "garden spade", "red wool hat"], dtype=object
    )
    data = _data([[1, 0, 0, 0], [0, 0, 1, 0]], item_text=texts)
    model = ContentRecommender(k=3).fit(data)
    recs = model.recommend(np.array([0]), data.purchased, 2).items[0]
    assert set(recs) == {1, 3}  # both wool items, though item 3 has no interactions at all
    because = model.explain(np.array([[3]]), data.weights[[0]])
    assert because.tolist() == [[0]]


def test_category_cap_limits_items_per_category():
    dense = np.zeros((2, 8))
    dense[:, 7] = 1
    pop = PopularityRecommender().fit(_data(dense + np.arange(8)[None, :] * 0))
    pop.popularity_ = np.array([9, 8, 7, 6, 5, 4, 3, 0], dtype=float)
    categories = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    recs = pop.recommend(
        np.array([0]), sp.csr_matrix((2, 8)), 4, categories=categories, max_per_category=2
    ).items[0]
    assert recs.tolist() == [0, 1, 4, 5]


def test_hybrid_blends_and_explains():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 10)) < 0.3).astype(float)
    data = _data(dense)
    hybrid = HybridRecommender(
        components=[(ItemKNNRecommender(k=5), 1.0), (PopularityRecommender(), 0.5)]
    ).fit(data)
    scores = hybrid.score(np.arange(30))
    assert scores.shape == (30, 10)
    assert scores.max() <= 1.5 + 1e-6
    assert hybrid.params()["blend"] == "1*item_knn_cosine + 0.5*popularity"


def test_lists_apply_rules_cold_start_and_reasons():
    dense = np.zeros((4, 6))
    dense[0, [0, 1]] = 1
    dense[1, [0, 2]] = 1
    dense[2, [1, 2]] = 1  # user 3 has bought nothing: the cold-start path
    data = _data(
        dense,
        user_segments=np.array([0, 0, 1, 1]),
        segment_names=["a", "b"],
        item_categories=np.zeros(6, dtype=int),
    )
    champion = ItemKNNRecommender(k=5).fit(data)
    lists = build_lists(champion, data, 3, blocked=np.array([5]), repeatable=np.array([0]))
    frame = pd.DataFrame(vars(lists))
    assert not ((frame["users"] == 0) & frame["items"].isin([1])).any()  # bought, not repeatable
    assert not (frame["items"] == 5).any()  # blocked
    cold = frame[frame["users"] == 3]
    assert (cold["source"] == 1).all() and (cold["reason"] == Reason.SEGMENT).all()
    warm = frame[frame["users"] < 3]
    assert (
        warm.groupby("users")["ranks"].apply(list).map(lambda r: r == list(range(1, len(r) + 1)))
    ).all()
    assert set(warm["reason"]) <= {Reason.BECAUSE, Reason.POPULAR}
    # Here every interaction is a purchase, so every explained list says "bought".
    explained = frame[frame["because"] >= 0]
    assert len(explained) and explained["bought"].all()
    assert not frame.loc[frame["because"] < 0, "bought"].any()


def test_has_bought_tells_purchases_from_views():
    purchased = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=np.float32))
    users = np.array([0, 0, 0, 1, 2, 2, 2])
    items = np.array([0, 1, 2, 2, 1, 0, -1])
    expected = purchased.toarray()[users, np.clip(items, 0, None)] > 0
    expected[items < 0] = False
    assert (has_bought(purchased, users, items) == expected).all()
    unsorted = sp.csr_matrix((np.ones(2), np.array([2, 0]), np.array([0, 2, 2, 2])), shape=(3, 3))
    assert not unsorted.has_sorted_indices
    assert has_bought(unsorted, np.array([0, 0, 0]), np.array([0, 1, 2])).tolist() == [
        True,
        False,
        True,
    ]
    assert not has_bought(sp.csr_matrix((2, 2)), np.array([0]), np.array([1])).any()


def test_exported_champion_serves_from_a_history(tmp_path):
    rng = np.random.default_rng(1)
    dense = np.zeros((40, 12))
    for u in range(40):
        group = np.arange(0, 6) if u < 20 else np.arange(6, 12)
        dense[u, rng.choice(group, 4, replace=False)] = 1
    data = _data(dense)
    model = HybridRecommender(
        components=[
            (ALSRecommender(factors=2, iterations=20, regularization=0.01, bm25=False), 1.0),
            (ItemKNNRecommender(k=10), 1.0),
        ]
    ).fit(data)
    export_model(model, data.item_ids, tmp_path / "m")
    served = HistoryRecommender()
    served.load_context(type("Ctx", (), {"artifacts": {"model_dir": str(tmp_path / "m")}})())
    out = served.predict(
        None, pd.DataFrame({"history": [["i0", "i1"], ["i7", "i8", "i9"]], "n": [3, 3]})
    )
    first, second = out["recommendations"]
    assert all(int(i[1:]) < 6 for i in first) and not {"i0", "i1"} & set(first)
    assert all(int(i[1:]) >= 6 for i in second)


def test_factor_models_fast_top_k_matches_the_dense_path():
    from seg_pipeline.lib.recommendations.base import Recommender

    rng = np.random.default_rng(5)
    dense = (rng.random((60, 40)) < 0.15).astype(float)
    data = _data(dense, item_categories=rng.integers(0, 4, 40))
    model = ALSRecommender(factors=8, iterations=5, bm25=False).fit(data)
    users = np.arange(60)
    for kwargs in (
        {},
        {"blocked": np.array([1, 2, 3])},
        {"categories": data.item_categories, "max_per_category": 2},
    ):
        fast = model.recommend(users, data.purchased, 5, **kwargs)
        dense = copy.copy(model)
        dense._top_k = types.MethodType(Recommender._top_k, dense)  # numpy scoring path
        slow = dense.recommend(users, data.purchased, 5, **kwargs)
        assert (fast.items == slow.items).all(), kwargs
        assert np.allclose(fast.scores, slow.scores, rtol=1e-4)


def test_block_top_n_is_exact_with_ties_padding_and_ragged_blocks():
    from seg_pipeline.lib.recommendations.topk import top_n

    rng = np.random.default_rng(11)
    # 1,000 columns: 16 blocks of 64 with a ragged last block, so the block path runs.
    scores = rng.integers(0, 50, size=(200, 1000)).astype(np.float32)
    scores[:5] = 0.0  # all tied
    scores[5:10, 3:] = -np.inf  # only three eligible items
    scores[10:20, -3:] = 1e6  # the winners sit in the ragged last block
    items, top = top_n(scores, 3)
    expected = np.sort(scores, axis=1)[:, ::-1][:, :3]
    assert np.array_equal(top, expected)
    assert np.array_equal(np.take_along_axis(scores, items, axis=1), top)
    assert (np.diff(top, axis=1) <= 0).all()
    # Ties are broken by the lower column, whatever the block layout.
    assert (items[:5] == [0, 1, 2]).all()
    assert (items[10:20] == [997, 998, 999]).all()
    assert (np.unique(items, axis=None).size > 3) and (items < 1000).all()


def _concentrated_als(n_users=3000, n_items=2000, seed=3):
    """Customers buy mostly from 40 popular items, as on power-law shop data."""
    rng = np.random.default_rng(seed)
    hot = rng.random((n_users, 40)) < 0.12
    tail = rng.random((n_users, n_items - 40)) < 0.002
    dense = np.hstack([hot, tail]).astype(float)
    data = _data(dense, item_categories=rng.integers(0, 6, n_items))
    return data, ALSRecommender(factors=8, iterations=5, random_state=0).fit(data)


def test_pool_scoring_keeps_lists_and_reports_its_recall():
    data, model = _concentrated_als()
    users = np.arange(data.shape[0])
    exact = model.recommend(users, data.purchased, 5)
    assert model.scoring_["scoring"] == "exact"
    pooled_model = copy.copy(model)
    pooled_model.pool_min_users, pooled_model.pool_probe, pooled_model.pool_check = 1000, 800, 400
    pooled = pooled_model.recommend(users, data.purchased, 5)
    report = pooled_model.scoring_
    assert report["scoring"] == "candidate_pool"
    assert report["scored_items"] < data.shape[1] // 2
    assert report["pool_recall"] >= 0.99
    assert (pooled.items >= 0).all()
    assert not np.take_along_axis(data.purchased.toarray(), pooled.items, axis=1).any()
    # The pooled lists score like the exact ones, rank by rank, for nearly every customer.
    same = np.isclose(pooled.scores, exact.scores, rtol=1e-5).all(axis=1)
    assert same.mean() >= 0.99
    assert pooled_model._pool is None  # the pool lives for one recommend call only


def test_pool_scoring_falls_back_to_exact_when_recall_is_low():
    data, model = _concentrated_als()
    model.pool_min_users, model.pool_probe, model.pool_check = 1000, 800, 400
    model.pool_min_recall = 1.01  # unreachable: the pool must be dropped
    users = np.arange(data.shape[0])
    pooled = model.recommend(users, data.purchased, 5)
    assert model.scoring_["scoring"].startswith("exact")
    assert model.scoring_["scored_items"] == data.shape[1]
    model.pool_min_users = None
    exact = model.recommend(users, data.purchased, 5)
    assert np.array_equal(pooled.items, exact.items)


def test_pool_scoring_never_shortens_a_list():
    data, model = _concentrated_als()
    # One customer bought every item the pool could hold: their list must come from the rest.
    dense = data.purchased.toarray()
    dense[0, :200] = 1
    purchased = sp.csr_matrix(dense)
    users = np.arange(data.shape[0])
    exact = model.recommend(users, purchased, 5)
    model.pool_min_users, model.pool_probe, model.pool_check = 1000, 800, 400
    recs = model.recommend(users, purchased, 5)
    assert model.scoring_["scoring"] == "candidate_pool"
    pool_size = model.scoring_["scored_items"]
    assert pool_size < data.shape[1] // 2
    assert (recs.items[0] >= 200).all() and np.isfinite(recs.scores[0]).all()
    assert np.allclose(recs.scores[0], exact.scores[0], rtol=1e-5)


def test_popularity_shortcut_is_exact():
    rng = np.random.default_rng(8)
    dense = (rng.random((80, 300)) < rng.random(300) * 0.3).astype(float)
    segments = rng.integers(-1, 3, 80)
    data = _data(dense, user_segments=segments)
    for model in (PopularityRecommender(), SegmentPopularityRecommender()):
        model.fit(data)
        table = model.popularity_[None, :] if model.name == "popularity" else model.table_
        rows = np.zeros(80, int) if model.name == "popularity" else segments % len(table)
        for blocked in (np.array([], int), np.array([0, 5, 7])):
            recs = model.recommend(np.arange(80), data.purchased, 10, blocked=blocked)
            for u in range(80):
                # Reference: the user's row in float64, best first, lower column on ties.
                eligible = np.flatnonzero((dense[u] == 0) & ~np.isin(np.arange(300), blocked))
                order = np.lexsort((eligible, -table[rows[u], eligible]))
                assert recs.items[u].tolist() == eligible[order][:10].tolist(), model.name
