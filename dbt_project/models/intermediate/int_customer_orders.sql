-- One row per customer order that contains at least one purchase line. Frequency counts these.
with events as (

    select * from {{ ref('stg_shop__events') }}

),

purchases as (

    select * from events
    where event_type = 'purchase' and customer_id is not null

),

final as (

    select
        customer_id,
        order_id,
        min(event_ts) as ordered_at,
        sum(revenue) as revenue,
        sum(quantity) as units,
        count(distinct item_id) as n_items

    from purchases
    group by customer_id, order_id

)

select * from final
