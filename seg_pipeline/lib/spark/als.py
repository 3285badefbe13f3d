"""MLlib's implicit-feedback ALS as a candidate of the recommender grid (the Spark engine).

The factorisation runs on Spark's executors; its factors come back to the driver and are planted
in an ``implicit`` model object, so everything after the fit is the DuckDB engine's code: the
same validation window and metrics against popularity, the blocked and candidate-pool scoring of
every customer (rather than MLlib's ``recommendForAllUsers``, an exact top-N of every customer
against every item), the purchased/unavailable/opt-out rules, the category cap, the reasons,
fold-in between refits and the MLflow model.

Both libraries minimise the same implicit-feedback objective (Hu, Koren and Volinsky: confidence
``1 + alpha * r``), but MLlib scales each user's and item's regularisation by their number of
ratings, so its ``regParam`` values are smaller than ``implicit``'s for the same effect; the
validation window chooses among them.
"""

from __future__ import annotations

import copy
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seg_pipeline.lib.recommendations.base import CannotFit
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender, bm25_stats
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix


@dataclass
class SparkALSRecommender(ALSRecommender):
    """ALS fitted by ``pyspark.ml.recommendation.ALS`` over Spark Connect."""

    name: str = "mllib_als"
    spark: object | None = field(default=None, repr=False, compare=False)
    staging: str | None = field(default=None, repr=False, compare=False)

    def params(self) -> dict:
        return {**super().params(), "engine": "mllib"}

    def __deepcopy__(self, memo):
        # Copies share the session (a client connection, which cannot be copied).
        clone = copy.copy(self)
        for f in fields(self):
            if f.name != "spark":
                setattr(clone, f.name, copy.deepcopy(getattr(self, f.name), memo))
        return clone

    def fit(self, data: InteractionMatrix, *, fold_in: bool = False) -> SparkALSRecommender:
        if self.spark is None or self.staging is None:
            raise ValueError("SparkALSRecommender needs a Spark session and a staging folder")
        weights = data.weights.tocsr()
        if self.bm25:
            self.bm25_idf_, self.bm25_average_length_ = bm25_stats(weights)
        matrix = self._weighted(weights).tocoo()
        self.item_support_ = np.bincount(weights.indices, minlength=data.shape[1])
        users, items = self._spark_factors(matrix)
        model = self._implicit_model(self.iterations)
        model.user_factors = users
        model.item_factors = items
        self.model_ = model
        self.item_gram_ = None
        if fold_in:
            self._solve_users(matrix.tocsr())
        return self

    def _spark_factors(self, matrix) -> tuple[np.ndarray, np.ndarray]:
        """Fit MLlib ALS on the weighted (user, item, confidence) triples; return the factors
        as dense arrays by row and column index (zeros for an index without any rating)."""
        from pyspark.ml.recommendation import ALS

        folder = Path(self.staging) / f"als_{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        try:
            pq.write_table(
                pa.table(
                    {
                        "u": pa.array(matrix.row.astype(np.int32)),
                        "i": pa.array(matrix.col.astype(np.int32)),
                        "r": pa.array(matrix.data.astype(np.float32)),
                    }
                ),
                folder / "part.parquet",
            )
            ratings = self.spark.read.parquet(str(folder))
            als = ALS(
                rank=self.factors,
                maxIter=self.iterations,
                regParam=self.regularization,
                alpha=self.alpha,
                implicitPrefs=True,
                seed=self.random_state,
                userCol="u",
                itemCol="i",
                ratingCol="r",
                coldStartStrategy="nan",
            )
            with _active(self.spark):
                try:
                    fitted = als.fit(ratings)
                except Exception as exc:
                    # MLlib solves each user's and item's normal equations by Cholesky; with
                    # very few ratings per row (a shop of three customers) and a small regParam
                    # they are not positive definite, where implicit's conjugate gradient
                    # still converges. The candidate is passed over, not the night failed.
                    if "SingularMatrixException" not in str(exc):
                        raise
                    raise CannotFit(
                        f"MLlib ALS at rank {self.factors} found a singular system on "
                        f"{matrix.shape[0]:,} customers × {matrix.shape[1]:,} items "
                        f"({matrix.nnz:,} ratings)"
                    ) from None
                users = _dense(fitted.userFactors, matrix.shape[0], self.factors)
                items = _dense(fitted.itemFactors, matrix.shape[1], self.factors)
                del fitted  # releases the server-side model reference
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return users, items


@contextmanager
def _active(spark):
    """Make ``spark`` this thread's active Connect session for a while: pyspark.ml finds a
    fitted model's server-side state (its factors, its release) through the active session,
    which in a process with two sessions (the tests') may be the other one."""
    from pyspark.sql.connect.session import SparkSession

    local = SparkSession._active_session
    previous = getattr(local, "session", None)
    local.session = spark
    try:
        yield
    finally:
        local.session = previous


def _dense(frame, n: int, rank: int) -> np.ndarray:
    """MLlib's (id, features) factor rows as an ``n × rank`` float32 array."""
    table = frame.toArrow()
    out = np.zeros((n, rank), dtype=np.float32)
    if table.num_rows:
        ids = table.column("id").to_numpy()
        features = np.asarray(table.column("features").to_pylist(), dtype=np.float32)
        out[ids] = features
    return out


def mllib_candidates(
    spark, staging: Path, search: bool, *, factors: int, random_state: int
) -> list[SparkALSRecommender]:
    """The MLlib ALS settings the Spark engine adds to the grid: two regularisations at the
    grid's first factor count with MLlib's default 10 iterations, or (the short list for large
    data) one at a quarter of it with 8 iterations, as the DuckDB engine's short-list ALS."""
    common = {"spark": spark, "staging": str(staging), "random_state": random_state}
    if not search:
        return [
            SparkALSRecommender(
                factors=max(16, factors // 4), iterations=8, regularization=0.01, **common
            )
        ]
    return [
        SparkALSRecommender(factors=factors, regularization=reg, alpha=1.0, iterations=10, **common)
        for reg in (0.01, 0.1)
    ]
