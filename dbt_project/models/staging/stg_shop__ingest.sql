select
    run_id as ingest_run_id,
    as_of,
    rows_read,
    rows_used,
    rows_quarantined

from {{ source('raw', 'ingest_manifest') }}
