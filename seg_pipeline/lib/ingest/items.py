"""The item catalogue: from the items file, or derived from the events (Online Retail titles)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from seg_pipeline.lib.ingest.formats import columns_of
from seg_pipeline.lib.ingest.results import IngestError
from seg_pipeline.lib.ingest.sources import CSV_QUOTING, file_kind, first_line, resolve_sources


def derive_event_items(con: duckdb.DuckDBPyConnection, fmt: str) -> None:
    """Keep the item descriptions that came inside the events (Online Retail) for the catalogue.

    An item's title is its most frequent description, and among equally frequent ones the first
    in alphabetical order. ``mode()`` picked among ties by the order its parallel partial results
    met, so the same file could give an item another title (and the content model other
    neighbours) from one run to the next.
    """
    if fmt == "online_retail":
        con.execute(
            """
            create or replace table _event_item_text as
            with used as (
                select item_id, description, price from _classified where reason is null
            ),
            descriptions as (
                select item_id, description, count(*) as n
                from used where description is not null
                group by all
            ),
            titles as (
                select item_id, first(description order by n desc, description) as title
                from descriptions
                group by item_id
            ),
            prices as (
                select item_id, median(price) filter (where price > 0) as price
                from used
                group by item_id
            )
            select item_id, titles.title, prices.price
            from prices left join titles using (item_id)
            """
        )
    else:
        con.execute(
            "create or replace table _event_item_text as "
            "select null::varchar as item_id, null::varchar as title, null::double as price "
            "where false"
        )


def ingest_items(con: duckdb.DuckDBPyConnection, items: str | Path | None, *, run_id: str) -> int:
    """Write ``raw_items`` from the items file, or from the events' own descriptions.

    Returns the number of items written. Item ids must be unique in the file: a repeated id
    raises rather than silently keeping one of the rows.
    """
    if items is None:
        con.execute(
            """
            create or replace table raw_items as
            select item_id, title, title as description, null::varchar as category,
                   price, true as available, $run_id as run_id
            from _event_item_text
            """,
            {"run_id": run_id},
        )
    else:
        files = resolve_sources(items)
        reader = (
            "read_parquet($files)"
            if file_kind(files[0]) == "parquet"
            else f"read_csv($files, header = true, all_varchar = true, {CSV_QUOTING})"
        )
        try:
            con.execute(
                f"create or replace temp table _items_landing as select * from {reader}",
                {"files": files},
            )
        except duckdb.Error as exc:
            raise IngestError(f"cannot read items file: {first_line(exc)}") from exc
        cols = columns_of(con, "_items_landing")
        if "item_id" not in cols:
            raise IngestError(f"items file has no item_id column; found: {', '.join(cols)}")
        dupes = con.execute(
            "select item_id, count(*) from _items_landing group by all having count(*) > 1 limit 3"
        ).fetchall()
        if dupes:
            raise IngestError(
                f"items file repeats item_id(s) {', '.join(str(d[0]) for d in dupes)}"
            )

        def col(name: str, sql_type: str) -> str:
            if name not in cols:
                return f"null::{sql_type}"
            if sql_type == "boolean":
                return (
                    f'coalesce(try_cast("{name}" as boolean), '
                    f"lower(trim(\"{name}\"::varchar)) in ('1', 'yes', 'y', 't'))"
                )
            return f'try_cast("{name}" as {sql_type})'

        con.execute(
            f"""
            create or replace table raw_items as
            select trim(item_id::varchar) as item_id,
                   {col("title", "varchar")} as title,
                   {col("description", "varchar")} as description,
                   {col("category", "varchar")} as category,
                   {col("price", "double")} as price,
                   {col("available", "boolean")} as available,
                   $run_id as run_id
            from _items_landing
            where nullif(trim(item_id::varchar), '') is not null
            """,
            {"run_id": run_id},
        )
        con.execute("drop table _items_landing")
    con.execute("drop table if exists _event_item_text")
    return con.execute("select count(*) from raw_items").fetchall()[0][0]
