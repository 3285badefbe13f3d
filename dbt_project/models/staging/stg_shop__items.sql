with source as (

    select * from {{ source('raw', 'raw_items') }}

),

renamed as (

    select
        item_id,
        coalesce(nullif(trim(title), ''), item_id) as title,
        coalesce(description, '') as description,
        coalesce(nullif(trim(category), ''), 'uncategorised') as category,
        price,
        coalesce(available, true) as available

    from source

)

select * from renamed
