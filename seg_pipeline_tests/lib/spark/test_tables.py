"""Tables between DuckDB and Spark, publishing behind views, and erasure in the Spark catalog,
against a real Spark Connect server."""

import uuid

import duckdb
import pytest

from seg_pipeline.lib.spark.privacy import forget_in_spark
from seg_pipeline.lib.spark.tables import from_spark, publish_in_spark, to_spark, version_tag


@pytest.fixture
def schemas(spark):
    """A fresh working and published schema, dropped afterwards."""
    base = f"t{uuid.uuid4().hex[:10]}"
    work, published = f"{base}_work", base
    yield work, published
    for schema in (work, published):
        spark.sql(f"drop database if exists {schema} cascade")


def test_tables_cross_both_ways_with_their_values(spark, schemas, tmp_path):
    work, _ = schemas
    con = duckdb.connect()
    con.execute(
        """
        create table events as
        select * from (values
            ('c1', 'i1', timestamp '2024-01-02 03:04:05', 2.5::decimal(18, 4),
             18446744073709551615::ubigint, ['a', 'b']),
            ('c2', 'i2', timestamp '2024-02-03 00:00:00', -1.0::decimal(18, 4),
             42::ubigint, [])
        ) t(customer_id, item_id, event_ts, revenue, content_hash, files)
        """
    )
    assert to_spark(con, spark, ["events", "not_there"], work, tmp_path) == ["events"]
    assert spark.table(f"{work}.events").count() == 2
    row = spark.sql(f"select * from {work}.events where customer_id = 'c1'").collect()[0]
    # The unsigned hash arrives as the signed number of the same 64 bits.
    assert row["content_hash"] == -1
    assert row["files"] == ["a", "b"]
    assert float(row["revenue"]) == 2.5

    back = duckdb.connect()
    assert from_spark(back, spark, ["events"], work, tmp_path) == {"events": 2}
    got = back.execute(
        "select customer_id, event_ts, revenue, content_hash from events order by 1"
    ).fetchall()
    assert [(r[0], str(r[1]), float(r[2]), r[3]) for r in got] == [
        ("c1", "2024-01-02 03:04:05", 2.5, -1),
        ("c2", "2024-02-03 00:00:00", -1.0, 42),
    ]
    # The staging folder is left empty.
    assert list(tmp_path.iterdir()) == []


def _publish(spark, work, published, run_id, value):
    spark.sql(f"create database if not exists {work}")
    spark.sql(f"drop table if exists {work}.scores")
    spark.sql(f"create table {work}.scores using parquet as select {value} as v")
    return publish_in_spark(spark, ["scores"], work, published, run_id)


def test_publishing_switches_views_and_keeps_one_previous_version(spark, schemas):
    work, published = schemas
    runs = [str(uuid.uuid4()) for _ in range(3)]
    for value, run_id in enumerate(runs):
        assert _publish(spark, work, published, run_id, value) == {"scores": 1}
        assert spark.sql(f"select v from {published}.scores").collect()[0]["v"] == value
        current = spark.sql(f"select run_id from {published}.published_run").collect()[0]
        assert current["run_id"] == run_id
    names = {r["tableName"] for r in spark.sql(f"show tables in {published}").collect()}
    tags = [version_tag(r) for r in runs]
    # The run before the last stays readable by its own name; the one before that is gone.
    assert f"scores__{tags[2]}" in names and f"scores__{tags[1]}" in names
    assert f"scores__{tags[0]}" not in names
    assert spark.sql(f"select v from {published}.scores__{tags[1]}").collect()[0]["v"] == 1


def test_erasure_rewrites_every_table_holding_the_customer(spark, schemas):
    work, published = schemas
    spark.sql(f"create database {work}")
    spark.sql(f"create database {published}")
    spark.sql(
        f"create table {work}.daily (customer_id string, n int, event_date date) using parquet "
        "partitioned by (event_date)"
    )
    spark.sql(
        f"insert into {work}.daily values ('c1', 1, date '2024-01-01'), "
        "('c2', 2, date '2024-01-01'), ('c1', 3, date '2024-01-02')"
    )
    spark.sql(
        f"create table {work}.quarantine using parquet as select * from values "
        "(cast(null as string), 'c1,i9,\"oops\"'), ('c3', null), (null, '12.0,x') "
        "as t(customer_id, raw_line)"
    )
    spark.sql(f"create table {published}.rfm__r1 using parquet as select 'c1' as customer_id")
    spark.sql(f"create view {published}.rfm as select * from {published}.rfm__r1")
    spark.sql(f"create table {work}.items using parquet as select 'i1' as item_id")

    removed = forget_in_spark(spark, ["c1", "12"], [work, published, "no_such_schema"])

    assert removed == {f"{work}.daily": 2, f"{work}.quarantine": 2, f"{published}.rfm__r1": 1}
    assert [r["customer_id"] for r in spark.table(f"{work}.daily").collect()] == ["c2"]
    partitions = [c.name for c in spark.catalog.listColumns(f"{work}.daily") if c.isPartition]
    assert partitions == ["event_date"]
    assert [r["customer_id"] for r in spark.table(f"{work}.quarantine").collect()] == ["c3"]
    # The published view still reads its (rewritten) table.
    assert spark.table(f"{published}.rfm").count() == 0
    assert spark.table(f"{work}.items").count() == 1
