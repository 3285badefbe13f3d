-- Customer × item × day activity counts: the compact input from which the recommenders build
-- their implicit-feedback matrix. Keeping it per day lets the evaluation cut the history at any
-- date without rescanning raw events, and the confidence weights stay in one place (Python config).
--
-- Incremental by day. A day's rows depend only on that day's events, so each night recomputes
-- only the days whose events changed: a fingerprint of every day's events (count and a hash of
-- the input rows) is stored on its rows and compared with tonight's. A new day, a late event for
-- an earlier day, an edited file or an erased customer all change some day's fingerprint; days
-- whose events are all gone are deleted first (pre-hook). The result equals a full rebuild
-- (seg_pipeline_tests/defs/recommendations/test_incremental_rescoring.py checks it).
--
-- On Spark, whose Parquet tables take no delete, the table is partitioned by day and each
-- changed day's partition is overwritten (insert_overwrite); a day whose events are all gone
-- keeps its rows there until a full refresh.
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'spark' else 'delete+insert'),
        unique_key=(none if target.type == 'spark' else 'event_date'),
        partition_by=('event_date' if target.type == 'spark' else none),
        file_format=('parquet' if target.type == 'spark' else none),
        on_schema_change='append_new_columns',
        pre_hook="""
            {% if is_incremental() and target.type != 'spark' %}
            delete from {{ this }} where event_date not in (
                select distinct cast(event_ts as date) from {{ ref('stg_shop__events') }}
                where customer_id is not null
            )
            {% endif %}
        """,
    )
}}

-- A separate scan from the aggregation's below: sharing one CTE made DuckDB materialise every
-- event.
with day_fingerprints as (

    select
        cast(event_ts as date) as event_date,
        count(*) as n_source_events,
        -- Each event's hash of its input row, computed at ingest (no need to hash the typed
        -- columns again here).
        bit_xor(content_hash) as source_hash
    from {{ ref('stg_shop__events') }}
    where customer_id is not null
    group by 1

),

{% if is_incremental() %}
changed_days as (

    select d.event_date
    from day_fingerprints d
    left join (
        select distinct event_date, n_source_events, source_hash from {{ this }}
    ) kept using (event_date)
    where kept.event_date is null
       or kept.n_source_events is distinct from d.n_source_events
       or kept.source_hash is distinct from d.source_hash

),
{% endif %}

events as (

    select
        customer_id,
        item_id,
        cast(event_ts as date) as event_date,
        event_type,
        case when event_type = 'purchase' then order_id end as order_id,
        quantity,
        value
    from {{ ref('stg_shop__events') }}
    where customer_id is not null
    {% if is_incremental() %}
      and cast(event_ts as date) in (select event_date from changed_days)
    {% endif %}

),

-- Distinct orders are counted in two steps, one group per order and then a count of groups,
-- which is cheaper than count(distinct order_id) with a filter.
per_order as (

    select
        customer_id,
        item_id,
        event_date,
        event_type,
        order_id,
        sum(quantity) as quantity,
        sum(value) as value,
        count(*) as n_events
    from events
    group by customer_id, item_id, event_date, event_type, order_id

),

final as (

    select
        customer_id,
        item_id,
        event_date,
        count(order_id) as n_orders,
        coalesce(sum(quantity) filter (where event_type = 'purchase'), 0) as units_bought,
        cast(coalesce(sum(n_events) filter (where event_type = 'return'), 0) as bigint) as n_returns,
        cast(coalesce(sum(n_events) filter (where event_type = 'view'), 0) as bigint) as n_views,
        cast(coalesce(sum(n_events) filter (where event_type = 'cart'), 0) as bigint) as n_carts,
        coalesce(sum(value) filter (where event_type = 'rating'), 0) as rating_sum,
        cast(coalesce(sum(n_events) filter (where event_type = 'rating'), 0) as bigint) as n_ratings
    from per_order
    group by customer_id, item_id, event_date

)

select final.*, d.n_source_events, d.source_hash
from final
join day_fingerprints d using (event_date)
{% if target.type == 'spark' %}
-- One writer per day partition: without it each task writes a file into every day it holds,
-- and a local Spark pays for every file and folder it creates.
distribute by event_date
{% endif %}
