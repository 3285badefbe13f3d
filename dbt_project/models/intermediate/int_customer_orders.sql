-- One row per customer order that contains at least one purchase line. Frequency counts these.
with events as (

    select * from {{ ref('stg_shop__events') }}

),

purchases as (

    select * from events
    where event_type = 'purchase' and customer_id is not null

),

-- Items are counted per order in two steps (one group per order line item, then a count):
-- cheaper than count(distinct item_id) over every purchase line.
order_items as (

    select
        customer_id,
        order_id,
        item_id,
        min(event_ts) as ordered_at,
        sum(revenue) as revenue,
        sum(quantity) as units
    from purchases
    group by customer_id, order_id, item_id

),

final as (

    select
        customer_id,
        order_id,
        min(ordered_at) as ordered_at,
        sum(revenue) as revenue,
        sum(units) as units,
        count(*) as n_items

    from order_items
    group by customer_id, order_id

)

select * from final
