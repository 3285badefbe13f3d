"""The same nightly_job on both engines, on one small synthetic shop: the Spark engine's published
tables (read with Spark SQL) against the DuckDB engine's published file."""

import datetime
import uuid

import duckdb
import pandas as pd
import pytest

from seg_pipeline.definitions import build_definitions
from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.resources import PipelineSettings
from seg_pipeline.lib.contract import CONTRACT_TABLES, MAY_BE_EMPTY, PUBLISHED_TABLES
from seg_pipeline.lib.synthetic import generate_shop, write_shop


def _night(root, shop, engine: SqlEngine):
    settings = PipelineSettings(
        events_path=str(shop["events"]),
        items_path=str(shop["items"]),
        database=str(root / "published.duckdb"),
        demo_dir=str(root / "demo"),
    )
    defs = build_definitions(settings, f"sqlite:///{root / 'mlflow.db'}", engine=engine)
    return defs.resolve_job_def("nightly_job").execute_in_process(raise_on_error=False), settings


@pytest.fixture(scope="module")
def shop_files(tmp_path_factory):
    """The suite's small shop over 150 days rather than a year: local Spark pays for every day
    partition of ``int_customer_item_daily`` it writes and reads (a forked ``chmod`` per file
    without Hadoop's native library), and the comparison needs no longer history."""
    shop = generate_shop(n_customers=400, n_items=96, seed=7, days=150)
    return write_shop(shop, tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="module")
def nights(tmp_path_factory, shop_files, spark, spark_remote):
    base = f"t{uuid.uuid4().hex[:10]}"
    engine = SqlEngine(
        engine="spark",
        spark_remote=spark_remote,
        work_schema=f"{base}_work",
        published_schema=base,
        staging_dir=str(tmp_path_factory.mktemp("staging")),
    )
    on_spark, _ = _night(tmp_path_factory.mktemp("spark_night"), shop_files, engine)
    on_duckdb, settings = _night(tmp_path_factory.mktemp("duckdb_night"), shop_files, None)
    con = duckdb.connect(str(settings.published_path), read_only=True)
    yield on_spark, on_duckdb, con, engine
    con.close()
    for schema in engine.schemas():
        spark.sql(f"drop database if exists {schema} cascade")


def _frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Values in comparable types: decimals as floats, timestamps without their unit."""
    out = frame.drop(columns=["run_id"]).sort_values("customer_id").reset_index(drop=True)
    for column in out.columns:
        first = out[column].iloc[0] if len(out) else None
        if out[column].dtype == object and hasattr(first, "as_tuple"):
            out[column] = out[column].astype(float)
        elif isinstance(first, datetime.date):
            out[column] = pd.to_datetime(out[column])
        elif pd.api.types.is_datetime64_any_dtype(out[column]):
            if getattr(out[column].dt, "tz", None) is not None:
                out[column] = out[column].dt.tz_convert("UTC").dt.tz_localize(None)
            out[column] = out[column].astype("datetime64[us]")
        elif pd.api.types.is_integer_dtype(out[column]):
            out[column] = out[column].astype("int64")
    # Missing values the same way on both sides (Arrow strings give NaN, DuckDB None).
    return out.astype(object).where(out.notna(), None)


def test_spark_night_passes_every_check_dbt_tests_included(nights):
    on_spark, on_duckdb, _, _ = nights
    assert on_spark.success and on_duckdb.success
    spark_checks = on_spark.get_asset_check_evaluations()
    assert [e.check_name for e in spark_checks if not e.passed] == []
    # dbt's tests ran on Spark as asset checks, the same ones as on DuckDB.
    names = sorted(e.check_name for e in spark_checks)
    assert names == sorted(e.check_name for e in on_duckdb.get_asset_check_evaluations())
    assert any(n.startswith("unique_combination_") for n in names)


def test_customer_rfm_equals_the_duckdb_engines_row_for_row(nights, spark):
    _, _, con, engine = nights
    on_spark = spark.table(f"{engine.published_schema}.customer_rfm").toPandas()
    on_duckdb = con.execute("select * from customer_rfm").df()
    assert len(on_duckdb) > 300
    pd.testing.assert_frame_equal(
        _frame(on_spark)[list(_frame(on_duckdb).columns)], _frame(on_duckdb), check_dtype=False
    )


def test_every_contract_table_is_published_in_spark_from_one_run(nights, spark):
    on_spark, _, con, engine = nights
    schema = engine.published_schema
    for table in PUBLISHED_TABLES:
        view = spark.table(f"{schema}.{table}")
        n = view.count()
        on_duckdb = con.execute(f"select count(*) from {table}").fetchall()[0][0]
        if table == "recommendation_metrics":
            # The Spark engine evaluates MLlib's ALS besides the DuckDB engine's candidates.
            assert view.where("model = 'mllib_als'").count() > 0
            assert n > on_duckdb
        else:
            assert n == on_duckdb, table
        if table in CONTRACT_TABLES:
            assert n > 0 or table in MAY_BE_EMPTY, table
            run_ids = {r["run_id"] for r in view.select("run_id").distinct().collect()}
            assert run_ids <= {on_spark.run_id} and (run_ids or n == 0), table
    run = spark.table(f"{schema}.published_run").collect()[0]
    assert run["run_id"] == on_spark.run_id


def test_keys_and_invariants_hold_in_spark_sql(nights, spark):
    _, _, _, engine = nights
    s = engine.published_schema
    duplicates = spark.sql(
        f"""
        select (select count(*) from (select customer_id, rank from {s}.customer_recommendations
                                      group by all having count(*) > 1)) as rec_keys,
               (select count(*) from (select customer_id from {s}.customer_segments
                                      group by all having count(*) > 1)) as seg_keys,
               (select count(*) from (select customer_id from {s}.customer_360
                                      group by all having count(*) > 1)) as c360_keys,
               (select count(*) from {s}.customer_recommendations
                 where reason is null) as no_reason,
               (select count(*) from {s}.customer_rfm
                 where rfm_cell <> concat(r_score, f_score, m_score)) as bad_cells,
               (select count(*) from {s}.customer_segments s
                 left anti join {s}.customer_rfm r using (customer_id)) as unscored
        """
    ).collect()[0]
    assert duplicates.asDict() == {
        "rec_keys": 0,
        "seg_keys": 0,
        "c360_keys": 0,
        "no_reason": 0,
        "bad_cells": 0,
        "unscored": 0,
    }
    # No list repeats an item the customer already bought.
    bought = spark.sql(
        f"""
        select count(*) as n from {s}.customer_recommendations r
        join {engine.work_schema}.int_customer_item_daily d
          on d.customer_id = r.customer_id and d.item_id = r.item_id and d.n_orders > 0
        """
    ).collect()[0]["n"]
    assert bought == 0


def test_the_champion_scores_as_on_duckdb(nights, spark):
    _, _, con, engine = nights
    on_spark = spark.sql(
        f"select model, ndcg from {engine.published_schema}.recommendation_metrics "
        "where is_champion"
    ).collect()[0]
    model, ndcg = con.execute(
        "select model, ndcg from recommendation_metrics where is_champion"
    ).fetchall()[0]
    assert on_spark["model"] == model
    assert on_spark["ndcg"] == pytest.approx(ndcg, rel=0.03)


def test_segments_and_profiles_equal_the_duckdb_engines(nights, spark):
    # The shop is smaller than the sweep's sample: Spark assigns and profiles every customer
    # exactly as the driver does on DuckDB.
    _, _, con, engine = nights
    s = engine.published_schema
    queries = {
        "customer_segments": "select customer_id, segment_id, segment_name, method, reason "
        "from {s}.customer_segments order by customer_id",
        "segment_profiles": "select segment_id, segment_name, n_customers, share, "
        "median_recency_days, mean_monetary, expected_spend, buy_again_share, description "
        "from {s}.segment_profiles order by segment_id",
    }
    for table, query in queries.items():
        on_spark = spark.sql(query.format(s=s)).toPandas()
        on_duckdb = con.execute(query.format(s="main")).df()
        assert len(on_duckdb) > 0, table
        pd.testing.assert_frame_equal(on_spark, on_duckdb, check_dtype=False, rtol=1e-9)
