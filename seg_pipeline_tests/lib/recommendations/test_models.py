"""Recommenders on a tiny matrix whose answer is known: two customer groups, disjoint tastes."""

import numpy as np
import pytest
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.evaluation import default_grid, evaluate
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.neighbours import ItemKNNRecommender, top_similar_items
from seg_pipeline.lib.recommendations.popularity import PopularityRecommender
from seg_pipeline.lib.recommendations.reasons import explain_by_similarity, explain_by_vectors

N_USERS, N_ITEMS = 40, 12


def _data(matrix, **extra):
    return InteractionMatrix(
        user_ids=np.array([f"u{i:02d}" for i in range(matrix.shape[0])], dtype=object),
        item_ids=np.array([f"i{i:02d}" for i in range(matrix.shape[1])], dtype=object),
        weights=sp.csr_matrix(matrix),
        purchased=sp.csr_matrix(matrix),
        **extra,
    )


def _two_taste_matrix(seed=0):
    """Users 0-19 buy from items 0-5, users 20-39 from items 6-11; each user misses some items."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for u in range(N_USERS):
        group = range(0, 6) if u < 20 else range(6, 12)
        bought = rng.choice(list(group), size=4, replace=False)
        dense[u, bought] = 1.0
    return sp.csr_matrix(dense)


@pytest.mark.parametrize(
    "model",
    [
        # Two latent factors: the rank of the true structure (more would memorise 40 users).
        ALSRecommender(factors=2, iterations=20, regularization=0.01, bm25=False),
        ItemKNNRecommender(weighting="cosine", k=10),
        ItemKNNRecommender(weighting="bm25", k=10),
        ItemKNNRecommender(weighting="tfidf", k=10),
    ],
)
def test_models_recommend_within_taste_group_and_never_purchased(model):
    matrix = _two_taste_matrix()
    model.fit(_data(matrix))
    recs = model.recommend(np.arange(N_USERS), matrix, 2)
    group_of_item = recs.items // 6
    group_of_user = (np.arange(N_USERS) >= 20).astype(int)[:, None]
    assert (recs.items >= 0).all()
    assert (group_of_item == group_of_user).all()
    assert not np.take_along_axis(matrix.toarray(), recs.items, axis=1).any()


def test_blocked_items_and_padding():
    matrix = _two_taste_matrix()
    model = PopularityRecommender().fit(_data(matrix))
    blocked = np.array([0, 6])
    recs = model.recommend(np.arange(N_USERS), matrix, N_ITEMS, blocked=blocked)
    assert not np.isin(recs.items, blocked).any()
    bought_blocked = matrix.toarray()[:, blocked].sum(axis=1)
    expected = N_ITEMS - 4 - (len(blocked) - bought_blocked)
    assert ((recs.items >= 0).sum(axis=1) == expected).all()
    assert np.isneginf(recs.scores[recs.items < 0]).all()


def test_popularity_orders_by_distinct_buyers():
    matrix = sp.csr_matrix(np.array([[1, 0, 5], [1, 1, 0], [1, 0, 0]], dtype=np.float32))
    model = PopularityRecommender().fit(_data(matrix))
    recs = model.recommend(np.array([0]), sp.csr_matrix((3, 3)), 3)
    assert recs.items[0].tolist() == [0, 1, 2]


def test_top_similar_items_excludes_self_and_sorts():
    sim = sp.csr_matrix(np.array([[1.0, 0.2, 0.9], [0.2, 1.0, 0.0], [0.9, 0.0, 1.0]]))
    rows, cols, vals = top_similar_items(sim, 5)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 2), (0, 1), (1, 0), (2, 0)]
    assert vals == pytest.approx([0.9, 0.2, 0.2, 0.9])


def test_reasons_point_at_the_closest_purchased_item():
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    history = sp.csr_matrix(np.array([[1, 0, 1, 0]], dtype=np.float32))
    because, sims = explain_by_vectors(np.array([[1, 3]]), history, vectors)
    assert because.tolist() == [[0, 2]]
    assert (sims > 0.9).all()
    similarity = sp.csr_matrix(
        np.array([[0, 0.8, 0, 0.1], [0.8, 0, 0, 0], [0, 0, 0, 0.7], [0.1, 0, 0.7, 0]])
    )
    because, _ = explain_by_similarity(np.array([[1, 3]]), history, similarity)
    assert because.tolist() == [[0, 2]]


def test_evaluation_prefers_a_model_that_learns_taste_over_popularity():
    train = _two_taste_matrix(seed=1)
    rng = np.random.default_rng(2)
    held = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for u in range(N_USERS):
        group = np.arange(0, 6) if u < 20 else np.arange(6, 12)
        unseen = [i for i in group if train[u, i] == 0]
        held[u, rng.choice(unseen)] = 1
    result = evaluate(
        [PopularityRecommender(), ItemKNNRecommender(weighting="cosine", k=10)],
        _data(train),
        sp.csr_matrix(held),
        k=2,
        hybrids=False,
    )
    table = result.table.set_index("model")
    assert result.champion.name == "item_knn_cosine"
    assert result.champion.model_ is None  # handed back unfitted, to refit on all data
    assert table.loc["item_knn_cosine", "ndcg"] > table.loc["popularity", "ndcg"]
    assert table["is_champion"].sum() == 1


def test_padded_history_keeps_the_heaviest_items_first():
    from seg_pipeline.lib.recommendations.reasons import _padded_history

    history = sp.csr_matrix(
        np.array([[0, 3, 1, 0, 2], [0, 0, 0, 0, 0], [5, 0, 0, 0, 0]], dtype=np.float32)
    )
    assert _padded_history(history, 2).tolist() == [[1, 4], [-1, -1], [0, -1]]
    assert _padded_history(history, 10).tolist() == [[1, 4, 2], [-1, -1, -1], [0, -1, -1]]


def test_short_grid_tries_two_smaller_als_sizes_and_one_per_other_family():
    grid = default_grid(factors=[64, 128], search=False)
    als = [m for m in grid if isinstance(m, ALSRecommender)]
    assert [m.factors for m in als] == [32, 16] and {m.iterations for m in als} == {8}
    assert sorted(m.name for m in grid if not isinstance(m, ALSRecommender)) == [
        "item_knn_cosine",
        "popularity",
        "segment_popularity",
    ]
    # Small factor counts never go below 16, and one size is not tried twice.
    assert [m.factors for m in default_grid(factors=[32], search=False) if m.name == "als"] == [16]


def test_als_warm_refit_starts_from_the_previous_item_factors():
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 12)) < 0.3).astype(np.float32)
    data = _data(dense)
    model = ALSRecommender(factors=4, iterations=5, bm25=False).fit(data)
    previous = model.model_.item_factors.copy()
    # Zero warm iterations: the refit keeps exactly the item factors it started from.
    model.warm_start_iterations = 0
    model.fit(data)
    assert np.array_equal(model.model_.item_factors, previous)
    # A matrix with other item columns cannot reuse them: a cold fit with ``iterations``.
    wider = _data(np.hstack([dense, dense[:, :3]]))
    model.fit(wider)
    assert model.model_.item_factors.shape == (15, 4)
    assert np.abs(model.model_.item_factors).max() > 0.01  # learned, not the 0.01-scale init


def test_top_per_row_breaks_ties_by_column_whether_or_not_columns_are_sorted():
    from seg_pipeline.lib.recommendations.reasons import top_per_row

    dense = np.array([[0, 2, 2, 1, 2], [3, 0, 3, 0, 0]], dtype=np.float32)
    ordered = sp.csr_matrix(dense)
    # The same entries with each row's columns stored backwards.
    columns = np.array([4, 3, 2, 1, 2, 0])
    shuffled = sp.csr_matrix(
        (dense[[0, 0, 0, 0, 1, 1], columns], columns, ordered.indptr), shape=dense.shape
    )
    assert ordered.has_sorted_indices and not shuffled.has_sorted_indices
    for matrix in (ordered, shuffled):
        rows, cols, values, rank = top_per_row(matrix, 3)
        assert rows.tolist() == [0, 0, 0, 1, 1]
        assert cols.tolist() == [1, 2, 4, 0, 2]  # ties: the lower column first
        assert values.tolist() == [2, 2, 2, 3, 3]
        assert rank.tolist() == [0, 1, 2, 0, 1]


def test_reasons_do_not_depend_on_which_customers_share_a_batch():
    rng = np.random.default_rng(5)
    history = sp.random(300, 40, density=0.15, format="csr", random_state=6, dtype=np.float32)
    history.data = np.ceil(history.data * 3)  # tied weights
    vectors = rng.standard_normal((40, 4))
    vectors[7] = 0  # an item with no signal ties with itself everywhere
    recs = rng.integers(-1, 40, size=(300, 5))
    together, _ = explain_by_vectors(recs, history, vectors, batch_size=37)
    for user in (0, 150, 299):
        alone, _ = explain_by_vectors(recs[[user]], history[[user]], vectors)
        assert together[user].tolist() == alone[0].tolist()
