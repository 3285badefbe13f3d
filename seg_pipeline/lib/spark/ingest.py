"""Read the events with Spark: every row ends up in ``raw_events`` or ``quarantined_events`` of the
Spark working schema, with the DuckDB engine's reason codes, so rows read = rows used + rows
quarantined (+ erased) holds on both engines.

The rows never reach the driver: Spark's executors read the files (CSV, gzip CSV, Parquet,
globs; a path they can reach, such as object storage on a cluster) or an existing Spark table,
type and classify them in one pass of Spark SQL, and write the tables. Only the counts, the
as_of date and the items' descriptions come back. Differences from the DuckDB engine: every
night reads all files (no new-files-only ingest), and a line that is not valid UTF-8 is read with
replacement characters rather than quarantined as ``invalid_encoding``.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from seg_pipeline.lib.ingest.classification import row_reason_sql
from seg_pipeline.lib.ingest.formats import FORMATS, ONLINE_RETAIL_NON_PRODUCT, check_columns
from seg_pipeline.lib.ingest.results import IngestError, IngestResult, refuse_too_many_bad
from seg_pipeline.lib.spark.tables import identifier, literal

# An existing Spark table as the events: ``--events spark:<schema>.<table>``.
TABLE_PREFIX = "spark:"
_CONTENT = (
    "customer_id",
    "item_id",
    "event_ts",
    "event_type",
    "quantity",
    "unit_price",
    "order_id",
    "value",
    "description",
)


@dataclass
class SparkIngest:
    """What the Spark ingest wrote, for the asset's metadata and the driver's copies."""

    result: IngestResult
    item_text: list[tuple] = field(default_factory=list)  # (item_id, title, price) per item


def _land(spark, events: str, view: str) -> list[str]:
    """Register the input as temp view ``view`` of text columns plus ``_source_file``,
    ``_source_line`` and ``_raw_line`` (the text of a line the CSV parser could not split);
    return the input's files (or the table's name)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.window import Window

    if events.startswith(TABLE_PREFIX):
        name = events.removeprefix(TABLE_PREFIX)
        if not spark.catalog.tableExists(name):
            raise IngestError(f"no Spark table {name}")
        frame = spark.table(name)
        frame = frame.select(
            *[F.col(f"`{c}`").cast("string").alias(c) for c in frame.columns],
            F.lit(name).alias("_source_file"),
            F.monotonically_increasing_id().alias("_order"),
            F.lit(None).cast("string").alias("_raw_line"),
        )
        files = [name]
    else:
        is_parquet = events.lower().endswith(".parquet")
        reader = spark.read
        try:
            if is_parquet:
                frame = reader.parquet(events)
                frame = frame.select(
                    *[F.col(f"`{c}`").cast("string").alias(c) for c in frame.columns],
                    F.col("_metadata.file_path").alias("_source_file"),
                    F.lit(None).cast("string").alias("_raw_line"),
                )
            else:
                header = reader.option("header", True).csv(events).columns
                schema = T.StructType(
                    [T.StructField(c, T.StringType()) for c in header]
                    + [T.StructField("_raw_line", T.StringType())]
                )
                frame = (
                    reader.schema(schema)
                    .option("header", True)
                    # RFC 4180, as the DuckDB engine reads: a quote inside a quoted field is
                    # doubled (Spark's default escape is a backslash).
                    .option("escape", '"')
                    .option("mode", "PERMISSIVE")
                    .option("columnNameOfCorruptRecord", "_raw_line")
                    .csv(events)
                )
                frame = frame.select("*", F.col("_metadata.file_path").alias("_source_file"))
            frame = frame.withColumn("_order", F.monotonically_increasing_id())
            files = []  # known once the rows are classified (one pass over the files)
        except Exception as exc:  # Spark's analysis errors name the path; keep the first line
            raise IngestError(f"cannot read {events}: {str(exc).splitlines()[0]}") from exc
    # Lines in file order: the header is line 1, as in the DuckDB engine.
    line = F.row_number().over(Window.partitionBy("_source_file").orderBy("_order"))
    offset = 1 if not events.startswith(TABLE_PREFIX) and not events.endswith(".parquet") else 0
    frame.withColumn("_source_line", line + F.lit(offset)).drop("_order").createOrReplaceTempView(
        view
    )
    return files


def _text(cols: list[str], name: str) -> str:
    if name in cols:
        return f"nullif(trim(`{name}`), '')"
    return "cast(null as string)"


def _normalised(fmt: str, cols: list[str]) -> str:
    """Spark SQL mapping the landed text columns onto the canonical ones (``formats.py``)."""
    if fmt == "canonical":
        return f"""
            {_text(cols, "customer_id")} as customer_id, {_text(cols, "item_id")} as item_id,
            {_text(cols, "event_ts")} as event_ts, {_text(cols, "event_type")} as event_type,
            {_text(cols, "quantity")} as quantity, {_text(cols, "unit_price")} as unit_price,
            {_text(cols, "order_id")} as order_id, {_text(cols, "value")} as value,
            cast(null as string) as description, cast(null as string) as country
        """
    invoice = _text(cols, "InvoiceNo")
    return f"""
        regexp_replace({_text(cols, "CustomerID")}, '\\\\.0+$', '') as customer_id,
        {_text(cols, "StockCode")} as item_id, {_text(cols, "InvoiceDate")} as event_ts,
        case when upper({invoice}) like 'C%' then 'return' else 'purchase' end as event_type,
        {_text(cols, "Quantity")} as quantity, {_text(cols, "UnitPrice")} as unit_price,
        {invoice} as order_id, cast(null as string) as value,
        {_text(cols, "Description")} as description, {_text(cols, "Country")} as country
    """


@contextmanager
def _scratch(spark, schema: str, tag: str):
    """Drop the ingest's temporary views and its table of classified rows, however it ends."""
    try:
        yield
    finally:
        for view in (f"_landing_{tag}", f"_classified_{tag}", f"_classified_{tag}_final"):
            spark.catalog.dropTempView(view)
        spark.sql(f"drop table if exists {schema}._ingest_rows")


def ingest_events_spark(
    spark,
    events: str,
    *,
    schema: str,
    fmt: str = "canonical",
    as_of: date | None = None,
    run_id: str = "manual",
    non_product_items: tuple[str, ...] | None = None,
    max_bad_share: float = 0.5,
    pseudonym_key: str | None = None,
    erased_hashes: list[str] = (),
) -> SparkIngest:
    """Load events into ``<schema>.raw_events`` and ``<schema>.quarantined_events`` and write
    ``<schema>.ingest_manifest``; the same reasons, order and counts as ``ingest_events``."""
    if fmt not in FORMATS:
        raise IngestError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
    if non_product_items is None:
        non_product_items = ONLINE_RETAIL_NON_PRODUCT if fmt == "online_retail" else ()
    schema = identifier(schema)
    spark.sql(f"create database if not exists {schema}")
    tag = uuid.uuid4().hex[:8]
    with _scratch(spark, schema, tag):
        landing, classified = f"_landing_{tag}", f"_classified_{tag}"
        files = _land(spark, events, landing)
        cols = [c for c in spark.table(landing).columns if not c.startswith("_")]
        check_columns(fmt, cols, files or [events])
        as_of_given = as_of is not None
        non_products = ", ".join(literal(i) for i in non_product_items) or "cast(null as string)"
        erased = ", ".join(literal(h) for h in erased_hashes)
        erased_test = (
            f"customer_id is not null and "
            f"sha2({literal(pseudonym_key)} || ':' || customer_id, 256) in ({erased})"
            if erased and pseudonym_key
            else "false"
        )
        erased_line = (
            f"exists(split(regexp_replace(coalesce(_raw_line, ''), '\"', ''), ','), f -> "
            f"sha2({literal(pseudonym_key)} || ':' || "
            f"regexp_replace(trim(f), '\\\\.0+$', ''), 256) in ({erased}))"
            if erased and pseudonym_key
            else "false"
        )
        spark.sql(
            f"""
            select *,
                case
                    when _raw_line is not null then 'malformed_row'
                    else {row_reason_sql(f"array_contains(array({non_products}), item_id)")}
                end as first_reason,
                xxhash64({", ".join(_CONTENT)}) as content_hash,
                case when _raw_line is not null then {erased_line} else {erased_test} end as erased
            from (
                select n.*,
                    cast(coalesce(try_to_timestamp(n.event_ts), try_cast(n.event_ts as timestamp))
                         as timestamp_ntz) as ts,
                    coalesce(lower(n.event_type), 'purchase') as etype,
                    try_cast(n.quantity as double) as qty,
                    try_cast(n.unit_price as double) as price,
                    try_cast(n.value as double) as val
                from (select {_normalised(fmt, cols)}, _source_file, _source_line, _raw_line
                      from {landing}) n
            )
            """
        ).createOrReplaceTempView(classified)
        if as_of is None:
            latest = spark.sql(
                f"select max(ts) as ts from {classified} where item_id is not null "
                "and etype in ('purchase','return','view','cart','rating') and _raw_line is null"
            ).collect()[0]["ts"]
            if latest is None:
                raise IngestError("no event has a valid item_id and event_ts; nothing to ingest")
            as_of = latest.date() + timedelta(days=1)
        as_of_sql = f"timestamp_ntz '{as_of.isoformat()} 00:00:00'"
        # Later reasons need the whole input: a date on or after as_of, then every later copy of
        # an identical row (every copy counts, valid or not; the first in file order wins).
        spark.sql(
            f"""
            select *,
                case
                    when erased then null
                    when first_reason is not null then first_reason
                    when ts >= {as_of_sql} then 'after_as_of'
                    when _raw_line is null and row_number() over (
                        partition by {", ".join(_CONTENT)}, (_raw_line is null)
                        order by _source_file, _source_line) > 1 then 'duplicate_event'
                end as reason
            from {classified}
            """
        ).createOrReplaceTempView(f"{classified}_final")
        # Every row with its reason, written once: the tables, the counts and the items' text below
        # read this instead of parsing the input files and numbering their lines again.
        final = f"{schema}._ingest_rows"
        spark.sql(f"drop table if exists {final}")
        spark.sql(f"create table {final} using parquet as select * from {classified}_final")
        files = files or sorted(
            r[0] for r in spark.sql(f"select distinct _source_file from {final}").collect()
        )
        file_array = ", ".join(literal(f) for f in files)
        counts = {
            r["reason"]: r["n"]
            for r in spark.sql(
                f"select coalesce(reason, if(erased, '_erased', '_used')) as reason, count(*) as n "
                f"from {final} group by 1"
            ).collect()
        }
        rows_used = counts.pop("_used", 0)
        rows_erased = counts.pop("_erased", 0)
        rows_quarantined = sum(counts.values())
        rows_read = rows_used + rows_quarantined + rows_erased
        if rows_read == 0:
            raise IngestError(f"no event rows in {Path(events).name}")
        refuse_too_many_bad(counts, rows_quarantined, rows_read, max_bad_share)
        spark.sql(f"drop table if exists {schema}.raw_events")
        spark.sql(
            f"""
            create table {schema}.raw_events using parquet as
            select
                cast(array_position(array({file_array}), _source_file) as bigint) * 1000000000000
                    + _source_line as event_id,
                customer_id, item_id, ts as event_ts,
                case when etype = 'purchase' and qty < 0 then 'return' else etype end as event_type,
                abs(coalesce(qty, 1)) as quantity,
                price as unit_price, order_id, val as value, country,
                _source_file as source_file, cast(_source_line as bigint) as source_line,
                {literal(run_id)} as run_id, content_hash
            from {final}
            where reason is null and not erased
            """
        )
        spark.sql(f"drop table if exists {schema}.quarantined_events")
        spark.sql(
            f"""
            create table {schema}.quarantined_events using parquet as
            select _source_file as source_file, cast(_source_line as bigint) as source_line, reason,
                   customer_id, item_id, event_ts, event_type, quantity, unit_price, order_id,
                   value, _raw_line as raw_line, {literal(run_id)} as run_id
            from {final}
            where reason is not null
            """
        )
        spark.sql(f"drop table if exists {schema}.ingest_manifest")
        spark.sql(
            f"""
            create table {schema}.ingest_manifest using parquet as
            select {literal(run_id)} as run_id, date '{as_of.isoformat()}' as as_of,
                   cast({rows_read} as bigint) as rows_read,
                   cast({rows_used} as bigint) as rows_used,
                   cast({rows_quarantined} as bigint) as rows_quarantined,
                   cast({rows_erased} as bigint) as rows_erased,
                   array({file_array}) as source_files,
                   cast(current_timestamp() as timestamp_ntz) as ingested_at,
                   {literal(fmt)} as events_format, {str(as_of_given).lower()} as as_of_given,
                   array({file_array}) as files_read_this_run
            """
        )
        stats = spark.sql(
            f"select count_if(customer_id is null) as anonymous, "
            f"count(distinct customer_id) as customers, count(distinct item_id) as items "
            f"from {schema}.raw_events"
        ).collect()[0]
        item_text = []
        if fmt == "online_retail":
            # An item's title is its most frequent description (the first alphabetically among
            # equally frequent ones) and its price the median positive price, as on DuckDB.
            item_text = [
                tuple(r)
                for r in spark.sql(
                    f"""
                    with used as (select item_id, description, price from {final}
                                  where reason is null and not erased),
                    titles as (
                        select item_id, min_by(description, struct(-n, description)) as title
                        from (select item_id, description, count(*) as n from used
                              where description is not null group by all)
                        group by item_id
                    ),
                    prices as (
                        select item_id, median(price) filter (where price > 0) as price
                        from used group by item_id
                    )
                    select item_id, titles.title, prices.price
                    from prices left join titles using (item_id)
                    """
                ).collect()
            ]
        return SparkIngest(
            result=IngestResult(
                files=files,
                rows_read=rows_read,
                rows_used=rows_used,
                rows_quarantined=rows_quarantined,
                as_of=as_of,
                rows_erased=rows_erased,
                reasons=counts,
                anonymous_rows=stats["anonymous"],
                n_customers=stats["customers"],
                n_items=stats["items"],
                files_read=files,
            ),
            item_text=item_text,
        )
