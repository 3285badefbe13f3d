"""Erasure in the Spark catalog: every table with a customer id, working and published.

Parquet tables take no ``delete``: each table that holds an erased customer is rewritten
without them (into a new table, then swapped in under the same name, keeping its partitioning),
so the published views, which select from the versioned tables by name, keep working.
"""

from __future__ import annotations

from seg_pipeline.lib.spark.tables import identifier, literal


def _id_list(customer_ids: list[str]) -> str:
    return ", ".join(literal(c) for c in customer_ids)


def _erased_rows(columns: set[str], ids: str) -> str | None:
    """The condition that picks an erased customer's rows, or None when the table has none."""
    parts = []
    if "customer_id" in columns:
        parts.append(f"customer_id in ({ids})")
    if "raw_line" in columns:
        # A malformed input line is kept as text: drop it when one of its CSV fields is an
        # erased id (a number written as 12345.0 too), as the DuckDB engine does.
        parts.append(
            "exists(split(regexp_replace(coalesce(raw_line, ''), '\"', ''), ','), "
            f"f -> regexp_replace(trim(f), '\\\\.0+$', '') in ({ids}))"
        )
    return " or ".join(f"({p})" for p in parts) or None


def forget_in_spark(spark, customer_ids: list[str], schemas: list[str]) -> dict[str, int]:
    """Rewrite every table of ``schemas`` that holds one of ``customer_ids`` without them;
    return the rows removed per table (``schema.table``)."""
    ids = _id_list(sorted(set(customer_ids)))
    removed: dict[str, int] = {}
    for schema in schemas:
        if not spark.catalog.databaseExists(identifier(schema)):
            continue
        for table in spark.catalog.listTables(schema):
            if table.tableType == "VIEW" or table.isTemporary:
                continue
            name = f"{schema}.{table.name}"
            listed = spark.catalog.listColumns(name)
            condition = _erased_rows({c.name for c in listed}, ids)
            if condition is None:
                continue
            n = spark.sql(f"select count(*) as n from {name} where {condition}").collect()[0]["n"]
            if n == 0:
                continue
            kept = f"{name}__erasing"
            spark.sql(f"drop table if exists {kept}")
            writer = spark.sql(f"select * from {name} where not coalesce({condition}, false)").write
            partitions = [c.name for c in listed if c.isPartition]
            if partitions:
                writer = writer.partitionBy(*partitions)
            writer.format("parquet").saveAsTable(kept)
            spark.sql(f"drop table {name}")
            spark.sql(f"alter table {kept} rename to {name}")
            removed[name] = n
    return removed
