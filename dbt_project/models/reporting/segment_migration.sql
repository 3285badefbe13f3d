-- Who moved where between the last two snapshot dates of segment_history, for the behavioural
-- and for the named RFM segments. On the first date every customer comes from '(new)'; a
-- customer missing on the later date goes to '(gone)'.
with history as (

    select * from {{ ref('segment_history') }}

),

dates as (

    select distinct as_of from history

),

bounds as (

    select
        max(as_of) as to_date,
        max(case when as_of < (select max(as_of) from dates) then as_of end) as from_date
    from dates

),

before as (

    select history.* from history inner join bounds on history.as_of = bounds.from_date

),

after as (

    select history.* from history inner join bounds on history.as_of = bounds.to_date

),

pairs as (

    select
        'behavioural' as kind,
        coalesce(before.segment_name, '(new)') as from_segment,
        coalesce(after.segment_name, '(gone)') as to_segment
    from before
    full outer join after on before.customer_id = after.customer_id

    union all

    select
        'rfm' as kind,
        coalesce(before.rfm_segment, '(new)') as from_segment,
        coalesce(after.rfm_segment, '(gone)') as to_segment
    from before
    full outer join after on before.customer_id = after.customer_id

),

counted as (

    select kind, from_segment, to_segment, count(*) as n_customers
    from pairs
    group by kind, from_segment, to_segment

),

final as (

    select
        bounds.from_date,
        bounds.to_date,
        counted.kind,
        counted.from_segment,
        counted.to_segment,
        counted.n_customers,
        cast(counted.n_customers as double)
            / sum(counted.n_customers) over (partition by counted.kind, counted.from_segment)
            as share_of_from,
        '{{ env_var("SEG_RUN_ID", "manual") }}' as run_id
    from counted
    cross join bounds

)

select * from final
order by kind, from_segment, to_segment
