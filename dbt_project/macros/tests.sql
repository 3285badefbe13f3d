{% test exactly_one_row(model) %}
-- Fails unless the model has exactly one row.
select count(*) as n from {{ model }} having count(*) <> 1
{% endtest %}

{% test between(model, column_name, min_value, max_value) %}
select * from {{ model }}
where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}
{% endtest %}

{% test reconciles_with_events(model) %}
-- Every customer with a purchase must appear exactly once in the RFM mart.
with expected as (
    select count(distinct customer_id) as n
    from {{ ref('stg_shop__events') }}
    where event_type = 'purchase' and customer_id is not null
)
select * from expected where n <> (select count(*) from {{ model }})
{% endtest %}

{% test unique_combination(model, columns) %}
-- Rows that share the same values in every one of `columns` (a compound key). Grouping on the
-- columns themselves is much cheaper at scale than `unique` on a concatenated text key.
select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
