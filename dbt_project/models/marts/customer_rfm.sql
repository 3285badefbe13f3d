-- Recency, frequency and monetary value per purchasing customer, their 1-5 scores and the
-- named RFM segment. Scores use percent_rank so that equal values always get equal scores
-- (ntile would split ties arbitrarily) and the lowest value always scores 1.
with ingest as (

    select as_of from {{ ref('stg_shop__ingest') }}

),

events as (

    select * from {{ ref('stg_shop__events') }}
    where customer_id is not null

),

orders as (

    select * from {{ ref('int_customer_orders') }}

),

pricing as (

    -- Without any prices, monetary value falls back to net units.
    select count(unit_price) > 0 as has_prices
    from events
    where event_type in ('purchase', 'return')

),

returns as (

    select
        customer_id,
        sum(revenue) as returned_revenue,
        sum(quantity) as returned_units
    from events
    where event_type = 'return'
    group by customer_id

),

countries as (

    select customer_id, {{ most_frequent('country') }} as country
    from events
    where country is not null
    group by customer_id

),

customers as (

    select
        customer_id,
        min(ordered_at) as first_purchase_at,
        max(ordered_at) as last_purchase_at,
        count(*) as frequency,
        sum(revenue) as gross_revenue,
        sum(units) as gross_units
    from orders
    group by customer_id

),

measured as (

    select
        customers.customer_id,
        countries.country,
        customers.first_purchase_at,
        customers.last_purchase_at,
        {{ dbt.datediff('cast(customers.last_purchase_at as date)', 'ingest.as_of', 'day') }}
            as recency_days,
        customers.frequency,
        case
            when pricing.has_prices
                then customers.gross_revenue - coalesce(returns.returned_revenue, 0)
            else customers.gross_units - coalesce(returns.returned_units, 0)
        end as monetary,
        case when pricing.has_prices then 'revenue' else 'units' end as monetary_basis,
        ingest.as_of
    from customers
    cross join ingest
    cross join pricing
    left join returns using (customer_id)
    left join countries using (customer_id)

),

scored as (

    select
        *,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by recency_days desc))) as integer) as r_score,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by frequency))) as integer) as f_score,
        cast(least(5, 1 + floor(5 * percent_rank() over (order by monetary))) as integer) as m_score
    from measured

),

final as (

    select
        scored.customer_id,
        scored.country,
        scored.first_purchase_at,
        scored.last_purchase_at,
        scored.recency_days,
        scored.frequency,
        scored.monetary,
        scored.monetary_basis,
        scored.r_score,
        scored.f_score,
        scored.m_score,
        cast(scored.r_score as {{ dbt.type_string() }}) || cast(scored.f_score as {{ dbt.type_string() }})
            || cast(scored.m_score as {{ dbt.type_string() }}) as rfm_cell,
        segment_map.rfm_segment,
        scored.as_of,
        '{{ env_var("SEG_RUN_ID", "manual") }}' as run_id
    from scored
    left join {{ ref('rfm_segment_map') }} as segment_map
        on scored.r_score = segment_map.r_score and scored.f_score = segment_map.f_score

)

select * from final
