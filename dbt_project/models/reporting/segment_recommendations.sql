-- Cold-start lists: the available items bought by the most customers of each segment in the
-- last `segment_popularity_window_days` before as_of, scored by the share of the segment that
-- bought them. Ties go to the smaller item id, so the lists are the same on every run.
with ingest as (

    select as_of from {{ ref('stg_shop__ingest') }}

),

recent as (

    select daily.customer_id, daily.item_id
    from {{ ref('int_customer_item_daily') }} as daily
    cross join ingest
    where daily.n_orders > 0
        and daily.event_date >= {{ dbt.dateadd('day', -var('segment_popularity_window_days'), 'ingest.as_of') }}
    group by daily.customer_id, daily.item_id

),

segments as (

    select customer_id, segment_id from {{ source('pipeline', 'customer_segments') }}

),

counted as (

    select segments.segment_id, recent.item_id, count(*) as buyers
    from recent
    inner join segments on recent.customer_id = segments.customer_id
    inner join {{ ref('item_catalog') }} as items on recent.item_id = items.item_id
    where items.available
    group by segments.segment_id, recent.item_id

),

sized as (

    select segment_id, count(*) as n_customers from segments group by segment_id

),

ranked as (

    select
        counted.segment_id,
        counted.item_id,
        cast(counted.buyers as double) / sized.n_customers as score,
        row_number() over (
            partition by counted.segment_id order by counted.buyers desc, counted.item_id
        ) as rank
    from counted
    inner join sized on counted.segment_id = sized.segment_id

)

select
    segment_id,
    cast(rank as integer) as rank,
    item_id,
    score,
    'segment_popularity' as method,
    '{{ env_var("SEG_RUN_ID", "manual") }}' as run_id
from ranked
where rank <= {{ var('segment_recommendations_n') }}
