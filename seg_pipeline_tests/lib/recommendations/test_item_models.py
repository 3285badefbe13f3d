"""EASE and RP3beta on tiny matrices whose answers are known."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.evaluation import evaluate
from seg_pipeline.lib.recommendations.item_models import (
    EASERecommender,
    RP3BetaRecommender,
    ShrunkCosineRecommender,
    TooManyItems,
)
from seg_pipeline.lib.recommendations.mlflow_export import HistoryRecommender, export_model
from seg_pipeline.lib.recommendations.popularity import PopularityRecommender
from seg_pipeline_tests.lib.recommendations.test_models import (
    N_USERS,
    _data,
    _two_taste_matrix,
)


def test_ease_weights_are_the_ridge_regression_of_each_item_on_the_others():
    rng = np.random.default_rng(0)
    x = (rng.random((30, 6)) < 0.4).astype(float)
    model = EASERecommender(l2=2.0).fit(_data(x))
    weights = model.weights_
    assert np.allclose(np.diag(weights), 0)
    # Column j: least squares of x_j on the other columns with an L2 penalty of 2.
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        direct = np.linalg.solve(a.T @ a + 2.0 * np.eye(5), a.T @ x[:, j])
        assert np.allclose(weights[others, j], direct, atol=1e-4)


@pytest.mark.parametrize(
    "model",
    [
        EASERecommender(l2=1.0),
        RP3BetaRecommender(alpha=1.0, beta=0.5, k=10),
        ShrunkCosineRecommender(k=10, shrink=5.0),
    ],
)
def test_item_models_recommend_within_the_taste_group_and_explain_by_a_bought_item(model):
    matrix = _two_taste_matrix()
    model.fit(_data(matrix))
    recs = model.recommend(np.arange(N_USERS), matrix, 2)
    group_of_user = (np.arange(N_USERS) >= 20).astype(int)[:, None]
    assert (recs.items // 6 == group_of_user).all()
    assert not np.take_along_axis(matrix.toarray(), recs.items, axis=1).any()
    because = model.explain(recs.items, matrix)
    bought = np.take_along_axis(matrix.toarray(), np.clip(because, 0, None), axis=1)
    assert (because >= 0).all() and bought.all()


def test_rp3beta_without_the_popularity_penalty_is_the_three_step_walk():
    x = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 1, 0]], dtype=float)
    model = RP3BetaRecommender(alpha=1.0, beta=0.0, k=3).fit(_data(x))
    walk = (x.T / x.T.sum(axis=1, keepdims=True)) @ (x / x.sum(axis=1, keepdims=True))
    np.fill_diagonal(walk, 0)
    assert np.allclose(model.similarity_.toarray(), walk, atol=1e-6)
    # The penalty lowers the popular target: item 0 (three buyers) against item 2 (two).
    penalised = RP3BetaRecommender(alpha=1.0, beta=1.0, k=3).fit(_data(x)).similarity_.toarray()
    assert penalised[1, 0] / penalised[1, 2] < walk[1, 0] / walk[1, 2]


def test_ease_skips_a_catalogue_above_its_limit_and_the_evaluation_says_so():
    matrix = _two_taste_matrix()
    with pytest.raises(TooManyItems, match="12 items exceed max_items=10"):
        EASERecommender(max_items=10).fit(_data(matrix))
    train = _data(matrix)
    relevant = sp.csr_matrix(1.0 - matrix.toarray())
    result = evaluate(
        [PopularityRecommender(), EASERecommender(max_items=10), EASERecommender(l2=1.0)],
        train,
        relevant,
        k=2,
        hybrids=False,
    )
    assert list(result.table["candidate"]) == ["popularity(window_days=None)", "ease(l2=1.0)"]
    assert result.skipped == [
        "ease(l2=500.0): EASE skipped: 12 items exceed max_items=10 "
        "(its dense item-item inverse grows with the square of the "
        "catalogue)"
    ]


@pytest.mark.parametrize(
    "model", [EASERecommender(l2=1.0), RP3BetaRecommender(k=10), ShrunkCosineRecommender(k=10)]
)
def test_exported_item_model_serves_from_a_history(tmp_path, model):
    data = _data(_two_taste_matrix())
    model.fit(data)
    export_model(model, data.item_ids, tmp_path / "m")
    served = HistoryRecommender()
    served.load_context(type("Ctx", (), {"artifacts": {"model_dir": str(tmp_path / "m")}})())
    out = served.predict(None, pd.DataFrame({"history": [["i00", "i01"], ["i07", "i08"]]}))
    first, second = out["recommendations"]
    assert all(int(i[1:]) < 6 for i in first[:3]) and not {"i00", "i01"} & set(first)
    assert all(int(i[1:]) >= 6 for i in second[:3])


def test_shrinkage_discounts_similarities_that_rest_on_few_co_buyers():
    # Items 0 and 1: bought together by 2 of 2 buyers; items 2 and 3: by 20 of 20.
    x = np.zeros((22, 4))
    x[:2, [0, 1]] = 1
    x[2:, [2, 3]] = 1
    plain = ShrunkCosineRecommender(k=3, shrink=0.0).fit(_data(x)).similarity_.toarray()
    assert np.allclose(plain, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    shrunk = ShrunkCosineRecommender(k=3, shrink=10.0).fit(_data(x)).similarity_.toarray()
    assert shrunk[0, 1] == pytest.approx(2 / 12) and shrunk[2, 3] == pytest.approx(20 / 30)


def test_shrunk_cosine_without_shrinkage_leaves_unbought_items_at_zero():
    x = np.zeros((3, 3))
    x[:, :2] = 1  # item 2 was never bought
    similarity = ShrunkCosineRecommender(k=3, shrink=0.0).fit(_data(x)).similarity_.toarray()
    assert np.isfinite(similarity).all() and not similarity[:, 2].any()


def test_time_decayed_ease_weighs_each_pair_by_its_age():
    from seg_pipeline.lib.recommendations.item_models import _binary

    x = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32))
    # days_ago holds 1 + the age: ages 0 and 60 days for user 0, 120 and 0 for user 1.
    days = sp.csr_matrix(np.array([[1, 61, 0], [0, 121, 1]], dtype=np.float32))
    data = _data(x, days_ago=days)
    assert np.allclose(_binary(data, 60.0).toarray(), [[1, 0.5, 0], [0, 0.25, 1]])
    assert np.allclose(_binary(data).toarray(), x.toarray())
    plain, decayed = EASERecommender(l2=1.0).fit(data), EASERecommender(1.0, 60.0).fit(data)
    assert decayed.params() == {"l2": 1.0, "half_life_days": 60.0}
    assert plain.params() == {"l2": 1.0}
    assert not np.allclose(plain.weights_, decayed.weights_)
