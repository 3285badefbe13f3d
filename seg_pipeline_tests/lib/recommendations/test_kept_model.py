"""The kept model: history fingerprints, fold-in, refit rules and the round trip through DuckDB."""

from datetime import date

import duckdb
import numpy as np
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import bm25_weight

from seg_pipeline.lib.recommendations.factor_models import ALSRecommender, bm25_rows, bm25_stats
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.kept_model import (
    KeptModel,
    catalogue_signature,
    load_model,
    row_fingerprints,
    save_model,
)


def _data(dense, item_ids=None, purchased=None):
    dense = np.asarray(dense, dtype=np.float32)
    n_users, n_items = dense.shape
    return InteractionMatrix(
        user_ids=np.array([f"u{i}" for i in range(n_users)], dtype=object),
        item_ids=np.array(item_ids or [f"i{i}" for i in range(n_items)], dtype=object),
        weights=sp.csr_matrix(dense),
        purchased=sp.csr_matrix(dense if purchased is None else purchased),
    )


def _random(seed=0, n_users=60, n_items=20):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.25) * rng.integers(1, 4, (n_users, n_items))
    return _data(dense)


def test_fingerprints_follow_the_history_not_the_columns():
    base = _data([[1, 0, 2], [0, 0, 0], [1, 1, 0]], ["a", "b", "c"])
    fp = row_fingerprints(base)
    assert len(set(fp.tolist())) == 3
    # A new item "aa" shifts every column after "a"; nobody's history changed.
    shifted = _data([[1, 0, 0, 2], [0, 0, 0, 0], [1, 0, 1, 0]], ["a", "aa", "b", "c"])
    assert np.array_equal(row_fingerprints(shifted), fp)
    heavier = _data([[1, 0, 2.5], [0, 0, 0], [1, 1, 0]], ["a", "b", "c"])
    assert (row_fingerprints(heavier) != fp).tolist() == [True, False, False]
    # The same weights, but one item now counts as bought.
    bought = _data(
        [[1, 0, 2], [0, 0, 0], [1, 1, 0]], ["a", "b", "c"], [[1, 0, 2], [0, 0, 0], [1, 0, 0]]
    )
    assert (row_fingerprints(bought) != fp).tolist() == [False, False, True]


def test_bm25_rows_with_the_matrix_own_statistics_is_implicits_bm25_weight():
    weights = _random().weights
    idf, average = bm25_stats(weights)
    ours = bm25_rows(weights, idf, average).toarray()
    theirs = bm25_weight(weights, K1=100, B=0.8).toarray()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_fold_in_gives_a_customer_the_same_factors_whoever_else_is_folded_in():
    data = _random()
    model = ALSRecommender(factors=8, iterations=5, random_state=0).fit(data)
    everyone = model.fold_in(data.weights).model_.user_factors.copy()
    some = np.array([3, 17, 42])
    alone = model.fold_in(data.weights[some]).model_.user_factors
    assert np.array_equal(alone, everyone[some])
    # It is ALS's own user step: close to what the fit's last iteration produced.
    refit = ALSRecommender(factors=8, iterations=5, random_state=0).fit(data)
    has = np.diff(data.weights.indptr) > 0
    ours, fits = everyone[has], refit.model_.user_factors[has]
    cosine = np.sum(ours * fits, axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(fits, axis=1)
    )
    assert np.median(cosine) > 0.9


def _kept(model, data, **overrides):
    facts = {
        "model_run_id": "run",
        "champion": "als(...)",
        "trained_as_of": date(2026, 1, 10),
        "config_hash": "h",
        "catalogue_signature": catalogue_signature(
            data.item_ids, data.item_ids, np.ones(data.shape[1], bool), None
        ),
    }
    return KeptModel.from_champion(model, data.item_ids, **(facts | overrides))


def test_a_kept_model_round_trips_and_scores_new_items_zero(tmp_path):
    data = _random()
    model = ALSRecommender(factors=8, iterations=5, random_state=0).fit(data).fold_in(data.weights)
    model.pool_items_ = np.array([1, 4, 5])
    kept = _kept(model, data, summary={"champion_ndcg_at_10": 0.25})
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert load_model(con) is None
    save_model(con, kept)
    loaded = load_model(con)
    assert np.array_equal(loaded.factors, kept.factors)
    assert np.array_equal(loaded.idf, kept.idf)
    assert list(loaded.pool) == ["i1", "i4", "i5"]
    assert loaded.summary == {"champion_ndcg_at_10": 0.25}
    assert loaded.trained_as_of == date(2026, 1, 10)
    # Today the catalogue has a new item "i10a" between i10 and i11.
    today = list(data.item_ids[:11]) + ["i10a"] + list(data.item_ids[11:])
    rebuilt = loaded.champion_for(np.array(today, dtype=object))
    factors = rebuilt.model_.item_factors
    assert not factors[11].any() and rebuilt.item_support_[11] == 0
    assert np.array_equal(np.delete(factors, 11, axis=0), model.model_.item_factors)
    assert [today[i] for i in rebuilt.fixed_pool] == ["i1", "i4", "i5"]
    # Folding the same histories into the rebuilt model gives the same factors, bit for bit.
    widened = sp.hstack(
        [data.weights[:, :11], sp.csr_matrix((data.shape[0], 1)), data.weights[:, 11:]]
    ).tocsr()
    rebuilt.fold_in(widened)
    assert np.array_equal(rebuilt.model_.user_factors, model.model_.user_factors)


def test_the_refit_rules():
    data = _random()
    kept = _kept(ALSRecommender(factors=4, iterations=2).fit(data), data)
    assert kept.retrain_reason(date(2026, 1, 12), "h", 7) is None
    assert kept.retrain_reason(date(2026, 1, 10), "h", 7) is None  # the same night again
    assert "settings changed" in kept.retrain_reason(date(2026, 1, 12), "other", 7)
    assert "7 days old" in kept.retrain_reason(date(2026, 1, 17), "h", 7)
    assert "before" in kept.retrain_reason(date(2026, 1, 9), "h", 7)
    assert kept.retrain_reason(date(2026, 1, 10), "h", 0) is not None  # 0: refit every run


@pytest.mark.parametrize(
    ("today", "available", "categories", "same"),
    [
        (["a", "b", "c"], [1, 1, 1], [0, 0, 1], True),
        (["a", "aa", "b", "c"], [1, 0, 1, 1], [2, 5, 2, 0], True),  # a new item; codes renamed
        (["a", "b", "c"], [1, 0, 1], [0, 0, 1], False),  # b is no longer available
        (["a", "b", "c"], [1, 1, 1], [0, 1, 1], False),  # b moved to c's category
        (["a", "c"], [1, 1], [0, 1], False),  # b left the catalogue
    ],
)
def test_the_catalogue_signature_sees_only_what_kept_lists_depend_on(
    today, available, categories, same
):
    trained = np.array(["a", "b", "c"], dtype=object)
    before = catalogue_signature(trained, trained, np.ones(3, bool), np.array([0, 0, 1]))
    now = catalogue_signature(
        trained, np.array(today, dtype=object), np.array(available, bool), np.array(categories)
    )
    assert (now == before) is same


def test_the_catalogue_signature_sees_a_kept_item_renamed():
    items = np.array(["a", "b"], dtype=object)
    flags, categories = np.ones(2, bool), np.zeros(2, int)

    def signature(texts, today=items):
        return catalogue_signature(
            items, today, flags[: len(today)], categories[: len(today)], texts
        )

    assert signature(["Mug", "Tea"]) == signature(["Mug", "Tea"])
    assert signature(["Mug", "Tea"]) != signature(["Mug", "Green tea"])
