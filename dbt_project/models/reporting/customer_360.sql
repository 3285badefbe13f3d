-- One wide row per known customer for BI tools: RFM, the named RFM segment, the behavioural
-- segment, the value forecast and the top three recommended items with their titles. Customers who only browsed
-- have recommendations but no RFM or segment columns.
with customers as (

    select distinct customer_id from {{ ref('int_customer_item_daily') }}

),

rfm as (

    select * from {{ ref('customer_rfm') }}

),

segments as (

    select customer_id, segment_id, segment_name from {{ source('pipeline', 'customer_segments') }}

),

value_forecast as (

    select customer_id, expected_spend, buy_probability
    from {{ source('pipeline', 'customer_value_forecast') }}

),

top_three as (

    select
        customer_id,
        max(case when rank = 1 then item_id end) as recommendation_1_item_id,
        max(case when rank = 1 then item_title end) as recommendation_1_title,
        max(case when rank = 2 then item_id end) as recommendation_2_item_id,
        max(case when rank = 2 then item_title end) as recommendation_2_title,
        max(case when rank = 3 then item_id end) as recommendation_3_item_id,
        max(case when rank = 3 then item_title end) as recommendation_3_title
    from {{ source('pipeline', 'customer_recommendations') }}
    where rank <= 3
    group by customer_id

),

final as (

    select
        customers.customer_id,
        rfm.country,
        rfm.first_purchase_at,
        rfm.last_purchase_at,
        rfm.recency_days,
        rfm.frequency,
        rfm.monetary,
        rfm.monetary_basis,
        rfm.r_score,
        rfm.f_score,
        rfm.m_score,
        rfm.rfm_cell,
        rfm.rfm_segment,
        segments.segment_id,
        segments.segment_name,
        value_forecast.expected_spend,
        value_forecast.buy_probability,
        top_three.recommendation_1_item_id,
        top_three.recommendation_1_title,
        top_three.recommendation_2_item_id,
        top_three.recommendation_2_title,
        top_three.recommendation_3_item_id,
        top_three.recommendation_3_title,
        rfm.as_of,
        '{{ env_var("SEG_RUN_ID", "manual") }}' as run_id
    from customers
    left join rfm on customers.customer_id = rfm.customer_id
    left join segments on customers.customer_id = segments.customer_id
    left join value_forecast on customers.customer_id = value_forecast.customer_id
    left join top_three on customers.customer_id = top_three.customer_id

)

select * from final
