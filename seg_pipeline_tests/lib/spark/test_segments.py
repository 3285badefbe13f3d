"""Segments on the Spark engine: every customer assigned, profiled and compared with earlier
nights in Spark, against the driver's library on the same customers."""

import uuid

import numpy as np
import pandas as pd
import pytest

from seg_pipeline.lib.segmentation.nightly import segment_customers
from seg_pipeline.lib.segmentation.profiles import STATISTICS
from seg_pipeline.lib.segmentation.stability import membership_stability
from seg_pipeline.lib.segmentation.sweep import SweepSettings
from seg_pipeline.lib.segmentation.value import horizon_days
from seg_pipeline.lib.spark import segments as spark_segments
from seg_pipeline_tests.lib.segmentation.test_sweep import SETTINGS, _customers

DAY_ONE, DAY_TWO = pd.Timestamp("2025-06-30").date(), pd.Timestamp("2025-07-01").date()


@pytest.fixture
def work(spark):
    schema = f"t{uuid.uuid4().hex[:10]}_work"
    spark.sql(f"create database {schema}")
    yield schema
    spark.sql(f"drop database if exists {schema} cascade")


def _dated(current, holdout, as_of):
    """The snapshots with their cut-off dates, as ``customer_features`` has them."""
    return (
        current.assign(snapshot="current", next_period_value=np.nan, cutoff_date=as_of),
        holdout.assign(snapshot="holdout", cutoff_date=as_of - pd.Timedelta(days=90)),
    )


def _put_features(spark, schema, current, holdout, as_of):
    frame = pd.concat(_dated(current, holdout, as_of))
    spark.createDataFrame(frame).write.mode("overwrite").format("parquet").saveAsTable(
        f"{schema}.customer_features"
    )


def _spark_night(spark, schema, n, previous=None, last_night_as_of=None, as_of=DAY_ONE, **kw):
    """One night on the Spark engine's path: decided on ``n`` sampled customers, applied to
    everyone in Spark; returns the night and its ``customer_segments`` in customer_id order."""
    settings = SweepSettings(**{**SETTINGS.__dict__, **kw})
    current, holdout = spark_segments.samples(spark, schema, n, settings.random_state)
    night = segment_customers(current, holdout, previous, settings, as_of=as_of)
    night = spark_segments.in_spark(
        spark,
        schema,
        night,
        last_night_as_of=last_night_as_of,
        keep_margin=settings.keep_margin,
        horizon_days=horizon_days(current, holdout),
    )
    spark_segments.write_customer_segments(spark, schema, night, model_run_id="m", run_id="r")
    segments = (
        spark.table(f"{schema}.customer_segments")
        .toPandas()
        .sort_values("customer_id", ignore_index=True)
    )
    return night, segments


def test_within_the_sample_two_nights_give_the_drivers_segments_profiles_and_stability(spark, work):
    current, holdout, _ = _customers()
    _put_features(spark, work, current, holdout, DAY_ONE)
    driver = segment_customers(*_dated(current, holdout, DAY_ONE), None, SETTINGS, as_of=DAY_ONE)
    first, first_segments = _spark_night(spark, work, n=10_000)
    # The first night: the shop is smaller than the sample, so every figure is the driver's.
    expected = driver.segments.sort_values("customer_id", ignore_index=True)
    segments = first_segments
    for column in ("customer_id", "segment_id", "segment_name", "method", "reason"):
        assert segments[column].tolist() == expected[column].tolist(), column
    assert set(segments["run_id"]) == {"r"} and set(segments["model_run_id"]) == {"m"}
    ours = first.profiles.set_index("segment_id")
    theirs = driver.profiles.set_index("segment_id").loc[ours.index]
    assert ours["segment_name"].tolist() == theirs["segment_name"].tolist()
    for column in (*STATISTICS, "expected_spend", "buy_again_share"):
        np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-9, err_msg=column)
    assert ours["description"].tolist() == theirs["description"].tolist()
    assert first.n_customers == len(current)

    # The second night keeps the model: one quiet customer and one who bought today take
    # another group's features.
    other = current.loc[current["customer_id"] != "C0000"].iloc[-1]
    tonight = current.assign(recency_days=current["recency_days"] + 1)
    for cid, recency in (("C0000", 400.0), ("C0001", 0.0)):
        row = tonight["customer_id"] == cid
        tonight.loc[row, ["frequency", "monetary"]] = other[["frequency", "monetary"]].to_numpy()
        tonight.loc[row, "recency_days"] = recency
    _put_features(spark, work, tonight, holdout, DAY_TWO)
    history = first_segments.assign(as_of=DAY_ONE).merge(
        current[["customer_id", "rfm_segment"]], on="customer_id"
    )[["as_of", "customer_id", "segment_id", "rfm_segment"]]
    spark.createDataFrame(history).write.format("parquet").saveAsTable(f"{work}.segment_history")
    settings = {"refit": False, "keep_margin": 100.0}
    driver = segment_customers(
        tonight,
        holdout,
        first.centroids,
        SweepSettings(**{**SETTINGS.__dict__, **settings}),
        as_of=DAY_TWO,
        history=history,
        last_night=(first_segments[["customer_id", "segment_id"]], DAY_ONE),
    )
    night, segments = _spark_night(
        spark, work, 10_000, first.centroids, DAY_ONE, as_of=DAY_TWO, **settings
    )
    assert night.sweep.method == "assigned"
    was = dict(zip(first_segments["customer_id"], first_segments["segment_id"], strict=True))
    now = dict(zip(segments["customer_id"], segments["segment_id"], strict=True))
    assert now["C0000"] == was["C0000"]  # quiet: kept by the margin
    assert now["C0001"] != was["C0001"]  # bought today: moved with their features
    expected = driver.segments.sort_values("customer_id", ignore_index=True)
    assert segments["segment_id"].tolist() == expected["segment_id"].tolist()
    today = segments.merge(tonight[["customer_id", "rfm_segment", "recency_days"]])
    assert night.stability == membership_stability(today, history, DAY_TWO) == driver.stability
    assert night.stability["day"]["customers"] == len(current) - 1


def test_a_shop_larger_than_the_sample_is_assigned_and_profiled_whole(spark, work):
    current, holdout, truth = _customers()
    _put_features(spark, work, current, holdout, DAY_ONE)
    night, segments = _spark_night(spark, work, n=60)
    # The driver saw 60 customers; Spark assigned all of them, each group to one segment.
    assert len(night.segments) == 60 and night.n_customers == len(current) == len(segments)
    assert segments["customer_id"].tolist() == current["customer_id"].tolist()
    by_group = pd.Series(segments["segment_id"].to_numpy()).groupby(truth).nunique()
    assert (by_group == 1).all() and segments["segment_id"].nunique() == len(by_group)
    assert segments["reason"].str.startswith("nearer this segment than S").all()
    sizes = segments["segment_id"].value_counts()
    profiles = night.profiles.set_index("segment_id")
    assert profiles["n_customers"].to_dict() == sizes.to_dict()
    assert profiles["share"].sum() == pytest.approx(1.0)
    for sid, size in sizes.items():
        assert f"{size:,} customers" in profiles.loc[sid, "description"]
        members = current[segments["segment_id"] == sid]
        assert profiles.loc[sid, "median_monetary"] == pytest.approx(members["monetary"].median())


def test_tree_segments_give_every_customer_the_rule_they_satisfy_as_on_the_driver(spark, work):
    current, holdout, _ = _customers()
    _put_features(spark, work, current, holdout, DAY_ONE)
    tree = {"methods": ("tree",)}
    settings = SweepSettings(**{**SETTINGS.__dict__, **tree})
    driver = segment_customers(*_dated(current, holdout, DAY_ONE), None, settings, as_of=DAY_ONE)
    night, segments = _spark_night(spark, work, n=10_000, **tree)
    assert night.sweep.method == "tree"
    expected = driver.segments.sort_values("customer_id", ignore_index=True)
    assert segments["segment_id"].tolist() == expected["segment_id"].tolist()
    assert segments["reason"].tolist() == expected["reason"].tolist()
    assert segments["reason"].str.startswith("rule: ").all()
    profiles = night.profiles.set_index("segment_id")
    assert profiles["description"].str.startswith("Rule: ").all()
    assert (
        profiles["description"].tolist()
        == driver.profiles.set_index("segment_id").loc[profiles.index, "description"].tolist()
    )
