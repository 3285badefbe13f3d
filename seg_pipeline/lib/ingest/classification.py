"""Quarantine reasons, and the one pass that types every landed row and gives a bad one its
reason."""

from __future__ import annotations

import duckdb

# Reason codes, in the order they are tested: a row gets the first that applies.
REASONS = {
    "malformed_row": "the CSV parser could not split the line into the header's columns",
    "invalid_encoding": "the line is not valid UTF-8",
    "missing_item_id": "item_id is empty",
    "non_product": "the item is a non-product line (postage, fee, discount, adjustment)",
    "bad_timestamp": "event_ts is empty or not an ISO 8601 timestamp",
    "unknown_event_type": "event_type is not purchase, return, view, cart or rating",
    "bad_quantity": "quantity is not a number",
    "zero_quantity": "quantity is zero",
    "bad_price": "unit_price is not a number, or is negative",
    "bad_value": "value is not a number, or a rating has no value",
    "missing_customer_id": "a rating needs a customer_id",
    "after_as_of": "the event is on or after the as_of date",
    "duplicate_event": "an identical row appeared earlier in the input",
}


def row_reason_sql(is_non_product: str) -> str:
    """The SQL ``case`` that gives a typed row the first reason of the list above that needs
    the row alone (NULL: none), in SQL that DuckDB and Spark both run. ``is_non_product`` is
    the engine's test of ``item_id`` against the non-product codes."""
    return f"""
        case
            when item_id is null then 'missing_item_id'
            when {is_non_product} then 'non_product'
            when ts is null then 'bad_timestamp'
            when etype not in ('purchase', 'return', 'view', 'cart', 'rating')
                then 'unknown_event_type'
            when quantity is not null and qty is null then 'bad_quantity'
            when qty = 0 then 'zero_quantity'
            when unit_price is not null and (price is null or price < 0) then 'bad_price'
            when (value is not null and val is null) or (etype = 'rating' and val is null)
                then 'bad_value'
            when etype = 'rating' and customer_id is null then 'missing_customer_id'
        end
    """


def classify(con: duckdb.DuckDBPyConnection, non_product_items: tuple[str, ...]) -> None:
    """Type every landed row and give the bad ones their quarantine reason (``_classified``)."""
    con.execute(
        f"""
        create or replace temp table _classified as
        select *,
            {row_reason_sql("list_contains($non_products, item_id)")} as reason,
            hash(customer_id, item_id, event_ts, event_type, quantity, unit_price, order_id,
                 value, description) as _content_hash
        from _typed
        """,
        {"non_products": list(non_product_items)},
    )
