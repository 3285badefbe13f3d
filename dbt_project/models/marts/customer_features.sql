-- Behavioural features per customer at two cut-offs: 'current' (as_of, for segmenting today) and
-- 'holdout' (as_of minus the forecast horizon, with the spend that followed in the horizon). The
-- holdout snapshot lets the pipeline measure how well segments built on the past forecast the
-- next period, the same way for any segmentation, the named RFM segments and the 125 RFM cells.
with ingest as (

    select as_of from {{ ref('stg_shop__ingest') }}

),

-- The cut-offs and the activity windows before each, computed once rather than on every row.
cutoffs as (

    select
        current_cutoff,
        holdout_cutoff,
        {{ days_before(90, 'current_cutoff') }} as current_minus_90,
        {{ days_before(180, 'current_cutoff') }} as current_minus_180,
        {{ days_before(90, 'holdout_cutoff') }} as holdout_minus_90,
        {{ days_before(180, 'holdout_cutoff') }} as holdout_minus_180
    from (
        select as_of as current_cutoff,
               {{ days_before(var('forecast_horizon_days'), 'as_of') }} as holdout_cutoff
        from ingest
    ) as cut

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

-- Both snapshots come from one pass over the events: each aggregate is computed once per
-- cut-off with a filter, instead of joining the events to the two cut-offs, which doubled the
-- rows.
flagged as (

    select
        events.customer_id, events.order_id, events.event_type, events.event_ts,
        events.quantity, events.category,
        case when pricing.has_prices then events.revenue else cast(events.quantity as decimal(18, 4)) end
            as amount,
        events.event_ts < cutoffs.holdout_cutoff as in_holdout,
        events.event_ts >= cutoffs.holdout_cutoff as in_horizon
    from events cross join pricing cross join cutoffs
    where events.event_ts < cutoffs.current_cutoff

),

orders as (

    select customer_id, order_id,
           min(event_ts) as ordered_at,
           sum(amount) as order_value,
           min(event_ts) filter (where in_holdout) as ordered_at_holdout,
           sum(amount) filter (where in_holdout) as order_value_holdout
    from flagged where event_type = 'purchase'
    group by customer_id, order_id

),

customer_orders as (

    select
        o.customer_id,
        min(o.ordered_at) as first_purchase_at,
        max(o.ordered_at) as last_purchase_at,
        count(*) as frequency,
        sum(o.order_value) as gross_value,
        count(*) filter (where o.ordered_at >= c.current_minus_90) as orders_last_90d,
        count(*) filter (where o.ordered_at >= c.current_minus_180
                           and o.ordered_at < c.current_minus_90) as orders_prior_90d,
        min(o.ordered_at_holdout) as first_purchase_at_holdout,
        max(o.ordered_at_holdout) as last_purchase_at_holdout,
        count(o.ordered_at_holdout) as frequency_holdout,
        sum(o.order_value_holdout) as gross_value_holdout,
        count(*) filter (where o.ordered_at_holdout >= c.holdout_minus_90)
            as orders_last_90d_holdout,
        count(*) filter (where o.ordered_at_holdout >= c.holdout_minus_180
                           and o.ordered_at_holdout < c.holdout_minus_90)
            as orders_prior_90d_holdout
    from orders o cross join cutoffs c
    group by o.customer_id

),

per_customer as (

    select 'current' as snapshot, c.current_cutoff as cutoff_date, o.customer_id,
           o.first_purchase_at, o.last_purchase_at, o.frequency, o.gross_value,
           o.orders_last_90d, o.orders_prior_90d
    from customer_orders o cross join cutoffs c
    union all
    select 'holdout', c.holdout_cutoff, o.customer_id,
           o.first_purchase_at_holdout, o.last_purchase_at_holdout, o.frequency_holdout,
           o.gross_value_holdout, o.orders_last_90d_holdout, o.orders_prior_90d_holdout
    from customer_orders o cross join cutoffs c
    where o.frequency_holdout > 0

),

customer_lines as (

    select customer_id,
           sum(amount) filter (where event_type = 'return') as returned_value,
           sum(quantity) filter (where event_type = 'return') as returned_units,
           sum(quantity) filter (where event_type = 'purchase') as bought_units,
           sum(amount) filter (where event_type = 'return' and in_holdout)
               as returned_value_holdout,
           sum(quantity) filter (where event_type = 'return' and in_holdout)
               as returned_units_holdout,
           sum(quantity) filter (where event_type = 'purchase' and in_holdout)
               as bought_units_holdout,
           -- The net spend in the horizon after the holdout cut-off: what segments forecast.
           sum(case when event_type = 'return' then -amount else amount end)
               filter (where in_horizon) as next_period_value
    from flagged
    group by customer_id

),

returns as (

    select 'current' as snapshot, customer_id, returned_value, returned_units, bought_units
    from customer_lines
    union all
    select 'holdout', customer_id, returned_value_holdout, returned_units_holdout,
           bought_units_holdout
    from customer_lines

),

future as (

    select 'holdout' as snapshot, customer_id, next_period_value
    from customer_lines
    where next_period_value is not null

),

category_counts as (

    select customer_id, category,
           count(*) as n,
           count(*) filter (where in_holdout) as n_holdout
    from flagged where event_type = 'purchase'
    group by customer_id, category

),

category_mix as (

    select 'current' as snapshot, customer_id,
           count(*) as n_categories,
           cast(max(n) as double) / sum(n) as top_category_share
    from category_counts
    group by customer_id
    union all
    select 'holdout', customer_id,
           count(*),
           cast(max(n_holdout) as double) / sum(n_holdout)
    from category_counts
    where n_holdout > 0
    group by customer_id

),

measured as (

    select
        p.snapshot,
        p.cutoff_date,
        p.customer_id,
        {{ dbt.datediff('cast(p.last_purchase_at as date)', 'p.cutoff_date', 'day') }} as recency_days,
        p.frequency,
        p.gross_value - coalesce(r.returned_value, 0) as monetary,
        {{ dbt.datediff('cast(p.first_purchase_at as date)', 'p.cutoff_date', 'day') }} as tenure_days,
        p.gross_value / p.frequency as avg_order_value,
        case when p.frequency > 1
            then {{ dbt.datediff('p.first_purchase_at', 'p.last_purchase_at', 'day') }}
                / (p.frequency - 1)
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
        cast(least(5, 1 + floor(5 * percent_rank() over (partition by snapshot order by recency_days desc))) as integer) as r_score,
        cast(least(5, 1 + floor(5 * percent_rank() over (partition by snapshot order by frequency))) as integer) as f_score,
        cast(least(5, 1 + floor(5 * percent_rank() over (partition by snapshot order by monetary))) as integer) as m_score
    from measured

),

final as (

    select
        scored.*,
        cast(scored.r_score as {{ dbt.type_string() }}) || cast(scored.f_score as {{ dbt.type_string() }})
            || cast(scored.m_score as {{ dbt.type_string() }}) as rfm_cell,
        segment_map.rfm_segment,
        -- Customers who bought once have no interval yet: use their tenure, the best lower bound.
        coalesce(scored.mean_interpurchase_days, scored.tenure_days) as interpurchase_days_filled,
        '{{ env_var("SEG_RUN_ID", "manual") }}' as run_id
    from scored
    left join {{ ref('rfm_segment_map') }} as segment_map
        on scored.r_score = segment_map.r_score and scored.f_score = segment_map.f_score

)

select * from final
