"""Tables between the driver's DuckDB file and the Spark catalog, and publishing in Spark.

On the Spark engine the SQL half of the night (dbt's staging, RFM marts and reporting models) and
the published tables live in the Spark catalog; the Python models (the segmentation sweep,
`implicit` and scikit-learn) read their inputs on the driver, as they do on DuckDB. Tables cross
over as Parquet in a staging folder that the driver and the Spark executors both reach (a local
folder for a local server; object storage on a cluster), which moves millions of rows without
pushing them through the Connect channel.
"""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def identifier(name: str) -> str:
    """``name`` if it is a plain SQL identifier (names are pasted into Spark SQL)."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain table or schema name: {name!r}")
    return name


def literal(text: str) -> str:
    """``text`` as a Spark SQL string literal (Spark Connect's SQL takes no bound parameters
    for the statements used here)."""
    return "'" + str(text).replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_spark(
    con: duckdb.DuckDBPyConnection, spark, tables: list[str], schema: str, staging: Path
) -> list[str]:
    """Copy DuckDB tables into ``schema`` of the Spark catalog (each replaced whole); return
    the tables copied (those missing on the DuckDB side are skipped)."""
    present = {
        r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
    }
    spark.sql(f"create database if not exists {identifier(schema)}")
    copied = []
    for table in tables:
        if table not in present:
            continue
        folder = Path(staging) / f"{identifier(table)}_{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        try:
            # Written as Parquet by DuckDB, read by Spark's executors: the rows never pass
            # through the driver's Connect channel.
            con.execute(
                f"copy ({_spark_select(con, table)}) to '{folder / 'part.parquet'}' "
                "(format parquet)"
            )
            frame = spark.read.parquet(str(folder))
            frame.write.mode("overwrite").format("parquet").saveAsTable(f"{schema}.{table}")
            copied.append(table)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return copied


def _spark_select(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """``select`` of a DuckDB table with its unsigned 64-bit columns (content hashes) as signed
    ones of the same bits: Spark has no unsigned type and would read them as decimals."""
    parts = []
    for name, kind, *_ in con.execute(f"describe {table}").fetchall():
        if kind == "UBIGINT":
            parts.append(
                f"case when {name} >= 9223372036854775808 "
                f"then cast(cast({name} as hugeint) - 18446744073709551616 as bigint) "
                f"else cast({name} as bigint) end as {name}"
            )
        else:
            parts.append(f'"{name}"')
    return f"select {', '.join(parts)} from {table}"


def from_spark(
    con: duckdb.DuckDBPyConnection, spark, tables: list[str], schema: str, staging: Path
) -> dict[str, int]:
    """Copy tables of ``schema`` in the Spark catalog into the DuckDB file (each replaced
    whole); return the row count of each."""
    counts = {}
    for table in tables:
        folder = Path(staging) / f"{identifier(table)}_{uuid.uuid4().hex[:8]}"
        try:
            spark.table(f"{identifier(schema)}.{table}").write.mode("overwrite").parquet(
                str(folder)
            )
            con.execute(
                f"create or replace table {table} as "
                f"select * from read_parquet('{folder}/*.parquet')"
            )
            counts[table] = con.execute(f"select count(*) from {table}").fetchall()[0][0]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return counts


def version_tag(run_id: str) -> str:
    """The suffix of one run's published tables: the run id's first block, as an identifier."""
    return "r" + re.sub(r"[^0-9a-z]", "", run_id.lower())[:12]


def publish_in_spark(spark, tables: list[str], work: str, published: str, run_id: str) -> dict:
    """Publish ``tables`` of the ``work`` schema into ``published``: each as a versioned table
    ``<table>__<tag>`` and a view ``<table>`` switched to it once every versioned table exists.

    A reader of the views never sees a half-written table (the views move only after every
    copy is complete), and the run before stays readable under its own names until the next
    run replaces it; older versions are dropped. Returns the row count per table.
    """
    tag = version_tag(run_id)
    published_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    spark.sql(f"create database if not exists {identifier(published)}")
    counts = {}
    for table in tables:
        versioned = f"{published}.{identifier(table)}__{tag}"
        spark.sql(f"drop table if exists {versioned}")
        _hive_compatible(spark.table(f"{identifier(work)}.{table}")).write.format(
            "parquet"
        ).saveAsTable(versioned)
        counts[table] = spark.table(versioned).count()
    for table in tables:
        spark.sql(
            f"create or replace view {published}.{table} as "
            f"select * from {published}.{table}__{tag}"
        )
    spark.sql(
        f"create or replace view {published}.published_run as "
        f"select {literal(run_id)} as run_id, {literal(tag)} as version, "
        f"timestamp {literal(published_at)} as published_at"
    )
    drop_old_versions(
        spark, published, tables, keep={tag, previous_tag(spark, published, tag, run_id)}
    )
    return counts


def _hive_compatible(frame):
    """``frame`` with its timestamps without time zone (which Hive, and so Trino over the
    same metastore, cannot read) as timestamps; the session's time zone is UTC, so the
    values are unchanged."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType

    return frame.select(
        *[
            F.col(f"`{f.name}`").cast("timestamp").alias(f.name)
            if isinstance(f.dataType, TimestampNTZType)
            else F.col(f"`{f.name}`")
            for f in frame.schema.fields
        ]
    )


def _versions(spark, schema: str) -> dict[str, set[str]]:
    """Versioned tables of ``schema`` by tag."""
    found: dict[str, set[str]] = {}
    for row in spark.sql(f"show tables in {schema}").collect():
        name = row["tableName"]
        if "__r" in name and not row["isTemporary"]:
            base, tag = name.rsplit("__", 1)
            found.setdefault(tag, set()).add(base)
    return found


def previous_tag(spark, schema: str, current: str, run_id: str) -> str | None:
    """Log this publication in ``<schema>.publication_log`` and return the version published
    before it (kept one more night for readers who pinned it)."""
    log = f"{schema}.publication_log"
    spark.sql(
        f"create table if not exists {log} "
        "(version string, run_id string, published_at timestamp) using parquet"
    )
    earlier = spark.sql(
        f"select max_by(version, published_at) as v from {log} where version <> {literal(current)}"
    ).collect()[0]["v"]
    spark.sql(
        f"insert into {log} values ({literal(current)}, {literal(run_id)}, current_timestamp())"
    )
    return earlier


def drop_old_versions(spark, schema: str, tables: list[str], keep: set) -> None:
    """Drop versioned tables of ``schema`` whose tag is not in ``keep``."""
    for tag, bases in _versions(spark, schema).items():
        if tag in keep:
            continue
        for base in bases:
            spark.sql(f"drop table if exists {schema}.{base}__{tag}")
