-- Customer × item × day activity counts: the compact input from which the recommenders build
-- their implicit-feedback matrix. Keeping it per day lets the evaluation cut the history at any
-- date without rescanning raw events, and the confidence weights stay in one place (Python config).
with events as (

    select * from {{ ref('stg_shop__events') }}
    where customer_id is not null

),

final as (

    select
        customer_id,
        item_id,
        event_ts::date as event_date,
        count(distinct order_id) filter (where event_type = 'purchase') as n_orders,
        coalesce(sum(quantity) filter (where event_type = 'purchase'), 0) as units_bought,
        count(*) filter (where event_type = 'return') as n_returns,
        count(*) filter (where event_type = 'view') as n_views,
        count(*) filter (where event_type = 'cart') as n_carts,
        coalesce(sum(value) filter (where event_type = 'rating'), 0) as rating_sum,
        count(*) filter (where event_type = 'rating') as n_ratings
    from events
    group by customer_id, item_id, event_ts::date

)

select * from final
