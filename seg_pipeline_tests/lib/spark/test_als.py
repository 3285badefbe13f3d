"""MLlib ALS fitted over Spark Connect, used through the DuckDB engine's scoring code."""

import copy

import numpy as np

from seg_pipeline.lib.recommendations.evaluation import default_grid
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender
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
