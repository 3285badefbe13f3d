"""The two input layouts (canonical, UCI Online Retail): their columns, and the SQL that turns
landed text into typed, normalised events."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import duckdb

from seg_pipeline.lib.ingest.results import IngestError

FORMATS = ("canonical", "online_retail")
EVENT_TYPES = ("purchase", "return", "view", "cart", "rating")

CANONICAL_REQUIRED = ("customer_id", "item_id", "event_ts")
CANONICAL_OPTIONAL = ("event_type", "quantity", "unit_price", "order_id", "value")
ONLINE_RETAIL_REQUIRED = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "CustomerID")
ONLINE_RETAIL_OPTIONAL = ("Description", "UnitPrice", "Country")
ITEMS_COLUMNS = ("item_id", "title", "description", "category", "price", "available")

# Lines of the UCI Online Retail file that are not products: postage, discounts, manual
# adjustments, fees and charity. They would otherwise top every popularity list.
ONLINE_RETAIL_NON_PRODUCT = (
    "POST",
    "DOT",
    "C2",
    "M",
    "m",
    "D",
    "S",
    "B",
    "BANK CHARGES",
    "AMAZONFEE",
    "CRUK",
    "PADS",
)


def columns_of(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"describe {table}").fetchall()]


def text_column(cols: Collection[str], name: str) -> str:
    """SQL for a trimmed, NULL-if-blank text column, or NULL when the file lacks the column."""
    if name in cols:
        return f"nullif(trim(\"{name}\"::varchar), '')"
    return "null::varchar"


# Landed types that need no parsing: Parquet's typed columns are used as they are.
NATIVE_TYPES = {
    "event_ts": ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "DATE"),
    "quantity": ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "HUGEINT"),
}
NATIVE_TYPES["unit_price"] = NATIVE_TYPES["value"] = NATIVE_TYPES["quantity"]


def typed_or_text(cols: dict[str, str], name: str) -> str:
    """The column itself when its landed type is already the canonical one, else ``text_column``.

    Printing a typed timestamp or number as text only to parse it back was a large share of the
    type-and-classify pass on Parquet input.
    """
    if cols.get(name, "").upper() in NATIVE_TYPES.get(name, ()):
        return f'"{name}"'
    return text_column(cols, name)


def timestamp_sql(landed_type: str | None) -> str:
    """SQL for ``n.event_ts`` as a UTC timestamp, NULL when it does not parse.

    Text with an offset is converted to UTC, text without one is taken as UTC. A typed column is
    only converted (casting a typed timestamp through timestamptz costs a pass over the rows).
    """
    landed = (landed_type or "").upper()
    if landed == "TIMESTAMP WITH TIME ZONE":
        return "n.event_ts at time zone 'UTC'"
    if landed in NATIVE_TYPES["event_ts"]:
        return "n.event_ts::timestamp"
    return (
        "coalesce(try_cast(n.event_ts as timestamptz) at time zone 'UTC', "
        "try_cast(n.event_ts as timestamp))"
    )


def normalised_select(fmt: str, cols: dict[str, str]) -> str:
    """SQL that maps the landed columns (name → type) onto the canonical columns.

    Columns are text, except typed Parquet timestamps and numbers, which keep their type.
    """
    if fmt == "canonical":
        return f"""
            select
                {text_column(cols, "customer_id")} as customer_id,
                {text_column(cols, "item_id")} as item_id,
                {typed_or_text(cols, "event_ts")} as event_ts,
                {text_column(cols, "event_type")} as event_type,
                {typed_or_text(cols, "quantity")} as quantity,
                {typed_or_text(cols, "unit_price")} as unit_price,
                {text_column(cols, "order_id")} as order_id,
                {typed_or_text(cols, "value")} as value,
                null::varchar as description,
                null::varchar as country,
                _source_file, _source_line
            from _landing
        """
    customer = text_column(cols, "CustomerID")
    invoice = text_column(cols, "InvoiceNo")
    return f"""
        select
            regexp_replace({customer}, '\\.0+$', '') as customer_id,
            {text_column(cols, "StockCode")} as item_id,
            {text_column(cols, "InvoiceDate")} as event_ts,
            case when upper({invoice}) like 'C%' then 'return' else 'purchase' end as event_type,
            {text_column(cols, "Quantity")} as quantity,
            {text_column(cols, "UnitPrice")} as unit_price,
            {invoice} as order_id,
            null::varchar as value,
            {text_column(cols, "Description")} as description,
            {text_column(cols, "Country")} as country,
            _source_file, _source_line
        from _landing
    """


def check_columns(fmt: str, cols: list[str], files: list[str]) -> None:
    required = CANONICAL_REQUIRED if fmt == "canonical" else ONLINE_RETAIL_REQUIRED
    missing = [c for c in required if c not in cols]
    if missing:
        found = ", ".join(c for c in cols if not c.startswith("_")) or "none"
        hint = ""
        if len([c for c in cols if not c.startswith("_")]) == 1:
            hint = " (only one column was found: is the delimiter a comma?)"
        other = "online_retail" if fmt == "canonical" else "canonical"
        other_req = ONLINE_RETAIL_REQUIRED if fmt == "canonical" else CANONICAL_REQUIRED
        if all(c in cols for c in other_req):
            hint = f" (the file looks like the '{other}' format: pass --format {other})"
        raise IngestError(
            f"{fmt} events are missing required column(s) {', '.join(missing)} in "
            f"{Path(files[0]).name}{'…' if len(files) > 1 else ''}; found: {found}{hint}"
        )
