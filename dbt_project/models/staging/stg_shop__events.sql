with source as (

    select * from {{ source('raw', 'raw_events') }}

),

renamed as (

    select
        event_id,
        customer_id,
        item_id,
        event_ts,
        event_type,
        quantity,
        unit_price,
        coalesce(order_id, customer_id || '@' || {{ iso_timestamp_text('event_ts') }}) as order_id,
        value,
        country,
        -- Money is summed as DECIMAL: exact, so the same input always gives the same totals
        -- (parallel sums of DOUBLE can differ in the last bit from run to run).
        cast(quantity * coalesce(unit_price, 0) as decimal(18, 4)) as revenue,
        customer_id is null as is_anonymous,
        content_hash

    from source

)

select * from renamed
