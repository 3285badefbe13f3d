"""The Spark ingest gives every row the DuckDB engine's reason, on a file with one row per reason,
and reads an existing Spark table the same way."""

import uuid
from datetime import date

import duckdb
import pytest

from seg_pipeline.lib.ingest import ingest_events
from seg_pipeline.lib.ingest.results import IngestError
from seg_pipeline.lib.privacy import pseudonymise as pseudonym
from seg_pipeline.lib.spark.ingest import ingest_events_spark

ROWS = """customer_id,item_id,event_ts,event_type,quantity,unit_price,order_id,value
c1,i1,2024-01-01 10:00:00,purchase,1,2.5,o1,
c1,i1,2024-01-01 10:00:00,purchase,1,2.5,o1,
c2,,2024-01-02,purchase,1,1,,
c3,i2,not a date,purchase,1,1,,
c4,i3,2024-01-03,teleport,1,1,,
c5,i4,2024-01-03,purchase,abc,1,,
c6,i5,2024-01-03,purchase,0,1,,
c7,i6,2024-01-03,purchase,1,-3,,
c8,i7,2024-01-03,rating,1,,,
,i8,2024-01-03,rating,1,,,5
c9,i9,2030-01-01,purchase,1,1,,
c10,i10,2024-01-04T08:30:00Z,purchase,-2,3,o9,
c11,i11,2024-01-05,view,,,,
gone,i12,2024-01-05,purchase,1,1,,
,i13,2024-01-06,purchase,2,1.5,,
c12,i14,2024-01-07,purchase,1,2,"o,12 ""gift"" box",
"""
KEY = "test-key"


@pytest.fixture
def schema(spark):
    name = f"t{uuid.uuid4().hex[:10]}_work"
    yield name
    spark.sql(f"drop database if exists {name} cascade")


def _duckdb_ingest(path, **kwargs):
    con = duckdb.connect()
    con.execute("create table erased_customers (customer_hash varchar)")
    con.execute("insert into erased_customers values (?)", [pseudonym("gone", KEY)])
    return con, ingest_events(con, str(path), incremental=False, pseudonym_key=KEY, **kwargs)


def test_every_reason_and_count_matches_the_duckdb_engine(spark, schema, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(ROWS)
    con, on_duckdb = _duckdb_ingest(path, as_of=date(2024, 2, 1), max_bad_share=0.9)
    on_spark = ingest_events_spark(
        spark,
        str(path),
        schema=schema,
        as_of=date(2024, 2, 1),
        max_bad_share=0.9,
        pseudonym_key=KEY,
        erased_hashes=[pseudonym("gone", KEY)],
    ).result
    assert on_spark.reasons == on_duckdb.reasons
    assert len(on_spark.reasons) == 10  # every reason of the file, duplicate_event included
    assert (on_spark.rows_read, on_spark.rows_used, on_spark.rows_erased) == (
        on_duckdb.rows_read,
        on_duckdb.rows_used,
        on_duckdb.rows_erased,
    )
    assert on_spark.rows_read == 16 and on_spark.rows_erased == 1
    spark_rows = spark.sql(
        f"select customer_id, item_id, cast(event_ts as string) as ts, event_type, quantity, "
        f"unit_price, order_id, source_line from {schema}.raw_events order by source_line"
    ).collect()
    duckdb_rows = con.execute(
        "select customer_id, item_id, strftime(event_ts, '%Y-%m-%d %H:%M:%S'), event_type, "
        "quantity, unit_price, order_id, source_line from raw_events order by source_line"
    ).fetchall()
    assert [tuple(r) for r in spark_rows] == duckdb_rows
    # RFC 4180 quoting on both engines: a comma and doubled quotes inside a quoted field.
    assert duckdb_rows[-1][6] == 'o,12 "gift" box'
    quarantined = spark.sql(
        f"select reason, source_line from {schema}.quarantined_events order by source_line"
    ).collect()
    assert [tuple(r) for r in quarantined] == con.execute(
        "select reason, source_line from quarantined_events order by source_line"
    ).fetchall()
    manifest = spark.table(f"{schema}.ingest_manifest").collect()[0]
    assert manifest["rows_read"] == manifest["rows_used"] + manifest["rows_quarantined"] + 1


def test_an_existing_spark_table_is_read_like_a_file(spark, schema, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(ROWS)
    spark.sql(f"create database if not exists {schema}")
    spark.read.option("header", True).csv(str(path)).write.saveAsTable(f"{schema}.shop_events")
    result = ingest_events_spark(
        spark,
        f"spark:{schema}.shop_events",
        schema=schema,
        as_of=date(2024, 2, 1),
        max_bad_share=0.9,
    ).result
    assert result.files == [f"{schema}.shop_events"]
    assert result.rows_used == 6 and result.rows_read == 16
    with pytest.raises(IngestError, match="no Spark table"):
        ingest_events_spark(spark, f"spark:{schema}.absent", schema=schema)
    with pytest.raises(IngestError, match="missing required column"):
        spark.sql(f"create table {schema}.thin using parquet as select 'c1' as customer_id")
        ingest_events_spark(spark, f"spark:{schema}.thin", schema=schema)
