"""MLlib ALS fitted over Spark Connect, used through the DuckDB engine's scoring code."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from seg_pipeline.lib.recommendations.base import CannotFit
from seg_pipeline.lib.recommendations.evaluation import default_grid, evaluate
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
from seg_pipeline.lib.recommendations.popularity import PopularityRecommender
from seg_pipeline.lib.spark.als import SparkALSRecommender, mllib_candidates
from seg_pipeline_tests.lib.recommendations.test_models import N_USERS, _data, _two_taste_matrix


def test_mllib_factors_recommend_within_the_taste_group_and_never_purchased(spark, tmp_path):
    matrix = _two_taste_matrix()
    model = SparkALSRecommender(
        factors=2, iterations=20, regularization=0.01, bm25=False, spark=spark, staging=tmp_path
    )
    model.fit(_data(matrix), fold_in=True)
    assert model.model_.user_factors.shape == (N_USERS, 2)
    assert model.model_.item_factors.shape == (12, 2)
    recs = model.recommend(np.arange(N_USERS), matrix, 2)
    group_of_item = recs.items // 6
    group_of_user = (np.arange(N_USERS) >= 20).astype(int)[:, None]
    assert (group_of_item == group_of_user).all()
    assert not np.take_along_axis(matrix.toarray(), recs.items, axis=1).any()
    # Nothing is left in the staging folder; a copy shares the session.
    assert list(tmp_path.iterdir()) == []
    assert copy.deepcopy(model).spark is spark


def test_mllib_candidates_join_either_grid(spark, tmp_path):
    full = mllib_candidates(spark, tmp_path, factors=64, search=True, random_state=0)
    short = mllib_candidates(spark, tmp_path, factors=64, search=False, random_state=0)
    assert [(m.factors, m.regularization, m.iterations) for m in full] == [
        (64, 0.01, 10),
        (64, 0.1, 10),
    ]
    assert [(m.factors, m.iterations) for m in short] == [(16, 8)]
    grid = default_grid(search=False, extra=short)
    assert grid[-1] is short[0] and isinstance(grid[-1], ALSRecommender)
    assert default_grid(search=False, families=["mllib"], extra=short)[-1] is short[0]


def test_a_factorisation_three_customers_cannot_support_is_passed_over(spark, tmp_path):
    """MLlib's Cholesky solves fail on a shop of three customers at the grid's rank; the
    candidate is reported and skipped, and popularity still competes (the night goes on)."""
    rng = np.random.default_rng(0)
    dense = np.zeros((3, 12), dtype=np.float32)
    for user in range(3):
        dense[user, rng.choice(12, 5, replace=False)] = 1.0
    train = _data(sp.csr_matrix(dense))
    relevant = sp.csr_matrix((dense == 0) & (rng.random(dense.shape) < 0.3), dtype=np.float32)
    mllib = mllib_candidates(spark, tmp_path, factors=64, search=True, random_state=0)
    with pytest.raises(CannotFit, match="singular system on 3 customers"):
        copy.deepcopy(mllib[0]).fit(train)
    evaluation = evaluate([PopularityRecommender(), *mllib], train, relevant, hybrids=False)
    assert len(evaluation.skipped) == 2
    assert all("mllib_als" in line and "singular" in line for line in evaluation.skipped)
    assert set(evaluation.table["model"]) == {"popularity"}
    assert list(tmp_path.iterdir()) == []
