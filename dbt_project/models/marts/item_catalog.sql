-- Every item that appears in the catalogue file or in the events, with sales statistics.
-- Items seen only in events get their id as title, so nothing downstream meets an unknown item.
with items as (

    select * from {{ ref('stg_shop__items') }}

),

events as (

    select * from {{ ref('stg_shop__events') }}

),

event_items as (

    select
        item_id,
        count(*) filter (where event_type = 'purchase' and customer_id is null) as n_anonymous_lines,
        coalesce(sum(revenue) filter (where event_type = 'purchase'), 0)
            - coalesce(sum(revenue) filter (where event_type = 'return'), 0) as net_revenue,
        {{ median_of('unit_price') }} filter (where event_type = 'purchase') as median_price,
        min(event_ts) as first_seen_at,
        max(event_ts) as last_seen_at
    from events
    group by item_id

),

-- Buyers and orders are counted over distinct pairs: cheaper than count(distinct) with a filter
-- inside the aggregate above.
buyers as (

    select item_id, count(customer_id) as n_buyers
    from (select distinct item_id, customer_id from events where event_type = 'purchase')
    group by item_id

),

item_orders as (

    select item_id, count(order_id) as n_orders
    from (select distinct item_id, order_id from events where event_type = 'purchase')
    group by item_id

),

final as (

    select
        coalesce(items.item_id, event_items.item_id) as item_id,
        coalesce(items.title, event_items.item_id) as title,
        coalesce(items.description, '') as description,
        coalesce(items.category, 'uncategorised') as category,
        coalesce(items.price, event_items.median_price) as price,
        coalesce(items.available, true) as available,
        coalesce(buyers.n_buyers, 0) as n_buyers,
        coalesce(item_orders.n_orders, 0) as n_orders,
        coalesce(event_items.n_anonymous_lines, 0) as n_anonymous_lines,
        coalesce(event_items.net_revenue, 0) as net_revenue,
        event_items.first_seen_at,
        event_items.last_seen_at,
        '{{ env_var("SEG_RUN_ID", "manual") }}' as run_id
    from items
    full outer join event_items using (item_id)
    left join buyers using (item_id)
    left join item_orders using (item_id)

)

select * from final
