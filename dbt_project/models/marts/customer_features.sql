-- Behavioural features per customer at two cut-offs: 'current' (as_of, for segmenting today) and
-- 'holdout' (as_of minus the forecast horizon, with the spend that followed in the horizon). The
-- holdout snapshot lets the pipeline measure how well segments built on the past forecast the
-- next period, the same way for any segmentation, the named RFM segments and the 125 RFM cells.
with ingest as (

    select as_of from {{ ref('stg_shop__ingest') }}

),

cutoffs as (

    select 'current' as snapshot, as_of as cutoff_date from ingest
    union all
    select 'holdout', as_of - {{ var('forecast_horizon_days') }}::integer from ingest

),

events as (

    select e.*, coalesce(i.category, 'uncategorised') as category
    from {{ ref('stg_shop__events') }} e
    left join {{ ref('item_catalog') }} i using (item_id)
    where e.customer_id is not null and e.event_type in ('purchase', 'return')

),

pricing as (

    select count(unit_price) > 0 as has_prices from events

),

valued as (

    select events.*,
        case when pricing.has_prices then revenue else quantity::decimal(18, 4) end as amount
    from events cross join pricing

),

history as (

    select c.snapshot, c.cutoff_date, v.*
    from valued v join cutoffs c on v.event_ts < c.cutoff_date

),

orders as (

    select snapshot, cutoff_date, customer_id, order_id, min(event_ts) as ordered_at,
           sum(amount) as order_value
    from history where event_type = 'purchase'
    group by all

),

per_customer as (

    select
        snapshot, cutoff_date, customer_id,
        min(ordered_at) as first_purchase_at,
        max(ordered_at) as last_purchase_at,
        count(*) as frequency,
        sum(order_value) as gross_value,
        count(*) filter (where ordered_at >= cutoff_date - 90) as orders_last_90d,
        count(*) filter (where ordered_at >= cutoff_date - 180 and ordered_at < cutoff_date - 90)
            as orders_prior_90d
    from orders
    group by all

),

returns as (

    select snapshot, customer_id,
           sum(amount) filter (where event_type = 'return') as returned_value,
           sum(quantity) filter (where event_type = 'return') as returned_units,
           sum(quantity) filter (where event_type = 'purchase') as bought_units
    from history
    group by all

),

category_counts as (

    select snapshot, customer_id, category, count(*) as n
    from history where event_type = 'purchase'
    group by all

),

category_mix as (

    select snapshot, customer_id,
           count(*) as n_categories,
           max(n)::double / sum(n) as top_category_share
    from category_counts
    group by all

),

future as (

    select c.snapshot, v.customer_id, sum(case when v.event_type = 'return' then -v.amount else v.amount end)
        as next_period_value
    from valued v
    join cutoffs c on c.snapshot = 'holdout'
        and v.event_ts >= c.cutoff_date and v.event_ts < (select as_of from ingest)
    group by all

),

measured as (

    select
        p.snapshot,
        p.cutoff_date,
        p.customer_id,
        date_diff('day', p.last_purchase_at::date, p.cutoff_date) as recency_days,
        p.frequency,
        p.gross_value - coalesce(r.returned_value, 0) as monetary,
        date_diff('day', p.first_purchase_at::date, p.cutoff_date) as tenure_days,
        p.gross_value / p.frequency as avg_order_value,
        case when p.frequency > 1
            then date_diff('day', p.first_purchase_at, p.last_purchase_at) / (p.frequency - 1)
        end as mean_interpurchase_days,
        coalesce(r.returned_units / nullif(r.bought_units, 0), 0) as return_rate,
        coalesce(m.n_categories, 0) as n_categories,
        coalesce(m.top_category_share, 1) as top_category_share,
        p.orders_last_90d - p.orders_prior_90d as activity_trend,
        case when p.snapshot = 'holdout' then coalesce(f.next_period_value, 0) end
            as next_period_value
    from per_customer p
    left join returns r using (snapshot, customer_id)
    left join category_mix m using (snapshot, customer_id)
    left join future f using (snapshot, customer_id)

),

scored as (

    select *,
        least(5, 1 + floor(5 * percent_rank() over (partition by snapshot order by recency_days desc)))::integer as r_score,
        least(5, 1 + floor(5 * percent_rank() over (partition by snapshot order by frequency)))::integer as f_score,
        least(5, 1 + floor(5 * percent_rank() over (partition by snapshot order by monetary)))::integer as m_score
    from measured

),

final as (

    select
        scored.*,
        scored.r_score::varchar || scored.f_score::varchar || scored.m_score::varchar as rfm_cell,
        segment_map.rfm_segment,
        -- Customers who bought once have no interval yet: use their tenure, the best lower bound.
        coalesce(scored.mean_interpurchase_days, scored.tenure_days) as interpurchase_days_filled,
        '{{ var("run_id") }}' as run_id
    from scored
    left join {{ ref('rfm_segment_map') }} as segment_map
        on scored.r_score = segment_map.r_score and scored.f_score = segment_map.f_score

)

select * from final
