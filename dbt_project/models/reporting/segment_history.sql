-- One snapshot of every customer's behavioural and named RFM segment per as_of date.
-- Incremental: tonight's date replaces its own rows (a re-run of the same date) and every other
-- date is kept. It is history, so `dbt build --full-refresh` leaves it alone. On Spark the
-- table is partitioned by as_of and tonight's partition is overwritten.
{{
    config(
        materialized='incremental',
        incremental_strategy=('insert_overwrite' if target.type == 'spark' else 'delete+insert'),
        unique_key=(none if target.type == 'spark' else 'as_of'),
        partition_by=('as_of' if target.type == 'spark' else none),
        file_format=('parquet' if target.type == 'spark' else none),
        full_refresh=false,
    )
}}

with segments as (

    select * from {{ source('pipeline', 'customer_segments') }}

),

rfm as (

    select customer_id, as_of, rfm_segment from {{ ref('customer_rfm') }}

),

final as (

    select
        rfm.as_of,
        segments.customer_id,
        segments.segment_id,
        segments.segment_name,
        rfm.rfm_segment,
        '{{ env_var("SEG_RUN_ID", "manual") }}' as run_id
    from segments
    inner join rfm on segments.customer_id = rfm.customer_id

)

select * from final
