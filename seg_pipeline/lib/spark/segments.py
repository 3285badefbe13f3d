"""Segments on the Spark engine: the night is decided on a sample on the driver; every customer
is assigned, profiled and compared with earlier nights in Spark.

The sweep fits on a sample on both engines (``selection_sample`` customers). On Spark only that
sample comes to the driver, in a fixed hash order of customer ids (so the same customers every
night); ``nightly.segment_customers`` decides on it (refit or keep, the model, ids, names) exactly
as on DuckDB. The model the night keeps for tomorrow (``segment_centroids``) then assigns every
customer on the executors (``mapInPandas``, the library's own ``StoredModel`` code: nearest
stored centroid or the tree's rules, quiet customers kept by the margin, a reason per customer),
and the profiles' statistics, the segments' outcomes on the holdout and the stability of quiet
customers are aggregated in Spark SQL over everyone. A shop no larger than the sample gets the
DuckDB engine's segments exactly.

The executors run ``seg_pipeline`` code: on a cluster, install the package on them (as for any
pandas UDF); a local server runs the driver's Python.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import numpy as np
import pandas as pd

from seg_pipeline.lib.segmentation.nightly import SegmentationNight, days_since, quiet_customers
from seg_pipeline.lib.segmentation.profiles import restate_profiles
from seg_pipeline.lib.segmentation.reasons import centroid_reasons, rule_reasons
from seg_pipeline.lib.segmentation.stability import LAGS
from seg_pipeline.lib.segmentation.stored import StoredModel
from seg_pipeline.lib.segmentation.tree import describe
from seg_pipeline.lib.spark.tables import identifier, literal

ASSIGNMENT = "_segment_assignment"


def samples(spark, schema: str, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """At most ``n`` customers of ``customer_features`` at today's and at the holdout cut, the
    frames ``tables.load_features`` gives on DuckDB (customer_id order, money as double):
    everyone when there are no more."""
    from pyspark.sql import functions as F

    def sample(snapshot: str) -> pd.DataFrame:
        frame = _features(spark, schema, snapshot)
        first = frame.orderBy(F.xxhash64("customer_id", F.lit(seed)), "customer_id").limit(n)
        return first.toPandas().sort_values("customer_id", ignore_index=True)

    return sample("current"), sample("holdout")


def in_spark(
    spark,
    schema: str,
    night: SegmentationNight,
    *,
    last_night_as_of,
    keep_margin: float,
    horizon_days: int | None,
) -> SegmentationNight:
    """The night decided on the sample, applied to everyone (``assign_everyone``,
    ``population_night``)."""
    since = days_since(last_night_as_of, night.as_of) if night.sweep.method == "assigned" else None
    assign_everyone(spark, schema, night, since=since, keep_margin=keep_margin)
    return population_night(spark, schema, night, horizon_days=horizon_days)


def _features(spark, schema: str, snapshot: str | None):
    """``customer_features`` at one cut (both when None), its decimals as doubles."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType

    frame = spark.table(f"{identifier(schema)}.customer_features")
    if snapshot is not None:
        frame = frame.where(F.col("snapshot") == snapshot)
    return frame.select(
        *[
            F.col(f.name).cast("double").alias(f.name)
            if isinstance(f.dataType, DecimalType)
            else F.col(f.name)
            for f in frame.schema.fields
        ]
    )


def assign_everyone(
    spark, schema: str, night: SegmentationNight, *, since: int | None, keep_margin: float
) -> None:
    """Every customer of tonight's and of the holdout cut in the segments the night keeps, in
    one pass: ``ASSIGNMENT`` (customer_id, snapshot, position, reason, next_period_value),
    positions into ``night.centroids``' rows.

    Between refits (``since`` days after last night's run; None on a refit night) a customer
    who bought nothing since keeps last night's segment unless another is nearer by more than
    ``keep_margin``, as ``sweep.assign_stored`` does on the driver.
    """
    from pyspark.sql import functions as F

    schema = identifier(schema)
    features = list(StoredModel.from_frame(night.centroids).features)
    customers = _features(spark, schema, None)
    keep = since is not None and _exists(spark, f"{schema}.customer_segments")
    if keep:
        # Read before tonight replaces it (write_customer_segments, from ASSIGNMENT).
        last_night = spark.table(f"{schema}.customer_segments").select(
            "customer_id", F.col("segment_id").alias("before")
        )
        customers = customers.join(last_night, "customer_id", "left")
    else:
        customers = customers.withColumn("before", F.lit(None).cast("string"))
    columns = [
        "customer_id",
        "snapshot",
        *dict.fromkeys([*features, "recency_days"]),
        "before",
        "next_period_value",
    ]
    assign = functools.partial(
        _assign_batches,
        model=night.centroids.to_dict("records"),
        since=since if keep else None,
        keep_margin=keep_margin,
    )
    customers.select(*columns).mapInPandas(
        assign,
        "customer_id string, snapshot string, position int, reason string, "
        "next_period_value double",
    ).write.mode("overwrite").format("parquet").saveAsTable(f"{schema}.{ASSIGNMENT}")


def _assign_batches(batches, *, model: list[dict], since, keep_margin: float):
    """``mapInPandas`` body, run on the executors: each batch of customers in the stored
    segments, with their reasons."""
    stored = StoredModel.from_frame(pd.DataFrame(model))
    position = {sid: i for i, sid in enumerate(stored.ids)}
    rule_texts = (
        None if stored.rules is None else {i: describe(r) for i, r in enumerate(stored.rules)}
    )
    for frame in batches:
        labels = stored.assign(frame)
        if since is not None:
            before = frame["before"].map(position).fillna(-1).to_numpy(dtype=np.int64)
            quiet = quiet_customers(frame["recency_days"].to_numpy(), since)
            quiet &= (frame["snapshot"] == "current").to_numpy()
            labels = stored.keep_quiet(frame, labels, before, quiet, keep_margin)
        reasons = (
            rule_reasons(labels, rule_texts)
            if rule_texts is not None
            else centroid_reasons(
                stored.scaled(frame)[0],
                stored.centroids,
                labels,
                stored.features,
                dict(enumerate(stored.ids)),
            )
        )
        yield pd.DataFrame(
            {
                "customer_id": frame["customer_id"],
                "snapshot": frame["snapshot"],
                "position": labels,
                "reason": reasons,
                "next_period_value": frame["next_period_value"].to_numpy(dtype=float),
            }
        )


def _model_rows(night: SegmentationNight) -> str:
    """The kept model's (position, segment_id, segment_name) as an inline Spark SQL table."""
    rows = ", ".join(
        f"({i}, {literal(sid)}, {literal(name)})"
        for i, (sid, name) in enumerate(
            zip(night.centroids["segment_id"], night.centroids["segment_name"], strict=True)
        )
    )
    return f"(values {rows}) as m(position, segment_id, segment_name)"


def population_night(
    spark, schema: str, night: SegmentationNight, *, horizon_days: int | None
) -> SegmentationNight:
    """``night`` with the profiles, stability and customer count of everyone assigned in Spark
    (``assign_everyone``); ids, names, rules and the model stay the night's decision."""
    schema = identifier(schema)
    segments = (
        f"select m.segment_id, a.customer_id from {schema}.{ASSIGNMENT} a "
        f"join {_model_rows(night)} on a.position = m.position where a.snapshot = 'current'"
    )
    statistics = spark.sql(
        f"""
        with seg as (
            select s.segment_id, cast(f.recency_days as double) as r,
                   cast(f.frequency as double) as q, cast(f.monetary as double) as m
            from ({segments}) s
            join {schema}.customer_features f
              on f.customer_id = s.customer_id and f.snapshot = 'current'),
        stats as (
            select segment_id, count(*) as n_customers,
                   avg(r) as mean_recency_days, avg(q) as mean_frequency, avg(m) as mean_monetary,
                   median(r) as median_recency_days, median(q) as median_frequency,
                   median(m) as median_monetary
            from seg group by segment_id),
        -- Mid-rank percentiles of each median among all customers (profiles._percentile_of).
        percentiles as (
            select s.segment_id,
                   (count_if(seg.r < s.median_recency_days)
                    + count_if(seg.r <= s.median_recency_days)) / 2 / count(*) as recency_pct,
                   (count_if(seg.q < s.median_frequency)
                    + count_if(seg.q <= s.median_frequency)) / 2 / count(*) as frequency_pct,
                   (count_if(seg.m < s.median_monetary)
                    + count_if(seg.m <= s.median_monetary)) / 2 / count(*) as monetary_pct
            from stats s cross join seg group by s.segment_id)
        select s.*, s.n_customers / sum(s.n_customers) over () as share,
               p.recency_pct, p.frequency_pct, p.monetary_pct
        from stats s join percentiles p using (segment_id)
        """
    ).toPandas()
    outcomes = spark.sql(
        f"""
        select m.segment_id, avg(h.next_period_value) as expected_spend,
               avg(case when h.next_period_value > 0 then 1d else 0d end) as buy_again_share
        from {schema}.{ASSIGNMENT} h join {_model_rows(night)} on h.position = m.position
        where h.snapshot = 'holdout'
        group by m.segment_id
        """
    ).toPandas()
    profiles = restate_profiles(
        night.profiles,
        statistics.set_index("segment_id"),
        outcomes.set_index("segment_id").astype(float),
        basis=night.basis,
        horizon_days=horizon_days,
    )
    return SegmentationNight(
        sweep=night.sweep,
        segments=night.segments,
        profiles=profiles,
        centroids=night.centroids,
        rfm_eta=night.rfm_eta,
        as_of=night.as_of,
        basis=night.basis,
        stability=_stability(spark, schema, segments, night.as_of),
        population=int(statistics["n_customers"].sum()),
    )


def _stability(spark, schema: str, segments: str, as_of) -> dict:
    """``stability.membership_stability`` over everyone: per lag with a snapshot in
    ``segment_history``, the shares of quiet customers who kept their segment and their named
    RFM segment."""
    if as_of is None or not _exists(spark, f"{schema}.segment_history"):
        return {}
    day = pd.Timestamp(as_of).date()
    lags = ", ".join(f"({literal(name)}, {int(lag)})" for name, lag in LAGS.items())
    # The snapshots' dates as literals too, so that only their partitions are read.
    dates = ", ".join(f"date {literal(str(day - timedelta(days=lag)))}" for lag in LAGS.values())
    rows = spark.sql(
        f"""
        select l.name, count(*) as customers,
               avg(case when t.segment_id = h.segment_id then 1d else 0d end) as segment,
               avg(case when f.rfm_segment = h.rfm_segment then 1d else 0d end) as rfm_segment
        from ({segments}) t
        join {schema}.customer_features f
          on f.customer_id = t.customer_id and f.snapshot = 'current'
        cross join (values {lags}) as l(name, lag)
        join {schema}.segment_history h
          on h.customer_id = t.customer_id
         and h.as_of = date_sub(date {literal(str(day))}, l.lag)
        where f.recency_days > l.lag and h.as_of in ({dates})
        group by l.name
        """
    ).collect()
    return {
        row["name"]: {
            "customers": int(row["customers"]),
            "segment": float(row["segment"]),
            "rfm_segment": float(row["rfm_segment"]),
        }
        for row in rows
    }


def write_customer_segments(
    spark, schema: str, night: SegmentationNight, *, model_run_id: str, run_id: str
) -> None:
    """``customer_segments`` in the working schema, from the assignment: the DuckDB engine's
    columns. The assignment's working table is dropped (no stray copy of customer ids)."""
    schema = identifier(schema)
    spark.sql(
        f"""
        select a.customer_id, m.segment_id, m.segment_name,
               {literal(night.sweep.method)} as method, a.reason,
               {literal(model_run_id)} as model_run_id, {literal(run_id)} as run_id,
               cast(current_timestamp() as timestamp_ntz) as assigned_at
        from {schema}.{ASSIGNMENT} a join {_model_rows(night)} on a.position = m.position
        where a.snapshot = 'current'
        """
    ).write.mode("overwrite").format("parquet").saveAsTable(f"{schema}.customer_segments")
    spark.sql(f"drop table if exists {schema}.{ASSIGNMENT}")


def _exists(spark, table: str) -> bool:
    return bool(spark.catalog.tableExists(table))
