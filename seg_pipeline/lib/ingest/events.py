"""Read event files into DuckDB: every row ends up either in ``raw_events`` or in
``quarantined_events`` with a reason, so ``rows read = rows used + rows quarantined`` always holds.

All parsing happens in DuckDB SQL so the same code handles a few thousand rows or tens of
millions: files are first landed as text (so a bad value can never abort the load), then typed and
classified in one pass. User-supplied values (paths, codes, dates) are always bound as parameters,
never pasted into SQL.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb

from seg_pipeline.lib.ingest.classification import classify
from seg_pipeline.lib.ingest.formats import (
    FORMATS,
    ONLINE_RETAIL_NON_PRODUCT,
    check_columns,
    normalised_select,
    timestamp_sql,
)
from seg_pipeline.lib.ingest.incremental import incremental_plan, unchanged_result
from seg_pipeline.lib.ingest.items import derive_event_items
from seg_pipeline.lib.ingest.results import (
    IngestError,
    IngestResult,
    ingest_result,
    refuse_too_many_bad,
)
from seg_pipeline.lib.ingest.sources import (
    drop_landing,
    file_stat,
    first_line,
    land,
    resolve_sources,
)
from seg_pipeline.lib.privacy import pseudonym_sql


def ingest_events(
    con: duckdb.DuckDBPyConnection,
    events: str | Path,
    *,
    fmt: str = "canonical",
    as_of: date | None = None,
    run_id: str = "manual",
    non_product_items: tuple[str, ...] | None = None,
    max_bad_share: float = 0.5,
    pseudonym_key: str | None = None,
    incremental: bool = True,
) -> IngestResult:
    """Load events into ``raw_events`` and ``quarantined_events`` in one transaction.

    With daily partitions (one file per day, named so that they sort by date) and
    ``incremental``, a run reads only the files it has not ingested before and appends their
    rows; the tables end up as a full rebuild would make them (``incremental_plan`` says when
    that holds; otherwise every file is read again).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection to the working database.
    events : str or Path
        A CSV, gzip CSV or Parquet file, or a glob of such files.
    fmt : {"canonical", "online_retail"}
        Column layout (see the contract, section 2).
    as_of : date, optional
        The day recency is measured from; events on or after it are quarantined. Defaults to the
        day after the latest valid event.
    run_id : str
        Dagster run id, stored on every row for lineage.
    non_product_items : tuple of str, optional
        Item ids that are not products. Defaults to the Online Retail codes for that format and to
        none for the canonical format.
    max_bad_share : float
        Fail instead of publishing when more than this share of rows is quarantined.
    pseudonym_key : str, optional
        Key of the customer-id hashes in ``erased_customers``; rows of erased customers are
        dropped before anything is stored and only counted (``rows_erased``).
    incremental : bool
        Append only new files when the earlier ingest allows it (see ``incremental_plan``).

    Returns
    -------
    IngestResult
    """
    if fmt not in FORMATS:
        raise IngestError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
    files = resolve_sources(events)
    if non_product_items is None:
        non_product_items = ONLINE_RETAIL_NON_PRODUCT if fmt == "online_retail" else ()

    con.execute("set TimeZone = 'UTC'")
    stats = {f: file_stat(f) for f in files}
    previous = incremental_plan(con, files, stats, fmt, as_of) if incremental else None
    new_files = files if previous is None else [f for f in files if f not in previous["files"]]
    if previous is not None and not new_files:
        return unchanged_result(con, files, run_id)
    land(con, new_files)
    col_types = dict(
        con.execute("select column_name, column_type from (describe _landing)").fetchall()
    )
    cols = list(col_types)
    check_columns(fmt, cols, files)

    n_landed = con.execute(
        "select (select count(*) from _landing) + (select count(*) from _rejects)"
    ).fetchall()[0][0]
    if n_landed == 0 and previous is None:
        raise IngestError(f"no event rows in {', '.join(Path(f).name for f in files)}")
    con.execute(f"create or replace temp view _normalised as {normalised_select(fmt, col_types)}")
    con.execute(
        f"""
        create or replace temp view _typed as
        select
            n.*,
            {timestamp_sql(col_types.get("event_ts") if fmt == "canonical" else None)} as ts,
            coalesce(lower(n.event_type), 'purchase') as etype,
            try_cast(n.quantity as double) as qty,
            try_cast(n.unit_price as double) as price,
            try_cast(n.value as double) as val
        from _normalised n
        """
    )
    # One pass types and classifies every row. The two reasons that need the whole input (a
    # date after as_of, a second copy of an event) are set afterwards by updates that touch few
    # rows; a reason set earlier in this order wins, as in the contract's list.
    try:
        classify(con, non_product_items)
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        # Parquet rows are first read here (the landing is a view): a damaged data page fails now.
        raise IngestError(f"cannot read input: {first_line(exc)}") from exc
    # as_of defaults to the day after the latest event that is otherwise valid.
    as_of_given = as_of is not None
    if as_of is None:
        latest = con.execute(
            "select max(ts) from _classified where item_id is not null and etype in "
            "('purchase','return','view','cart','rating')"
        ).fetchall()[0][0]
        if latest is None and previous is not None:
            as_of = previous["as_of"]  # only bad rows today: yesterday's as_of stands
        elif latest is None:
            raise IngestError("no event has a valid item_id and event_ts; nothing to ingest")
        else:
            as_of = (latest.date() if hasattr(latest, "date") else latest) + timedelta(days=1)
    con.execute(
        "update _classified set reason = 'after_as_of' "
        "where reason is null and ts >= $as_of::timestamp",
        {"as_of": as_of},
    )
    # Duplicates: only rows whose content hash occurs twice are compared column by column, so
    # the exact window runs on a few rows instead of sorting every row (a hash collision costs
    # a comparison, never a row). Every copy counts, valid or not; the first in file order wins.
    con.execute(
        """
        update _classified set reason = 'duplicate_event'
        from (
            select _source_file, _source_line
            from (
                select _source_file, _source_line, reason,
                    row_number() over (
                        partition by customer_id, item_id, event_ts, event_type, quantity,
                                     unit_price, order_id, value, description
                        order by _source_file, _source_line
                    ) as copy_no
                from _classified
                where _content_hash in (
                    select _content_hash from _classified group by all having count(*) > 1
                )
            )
            where copy_no > 1 and reason is null
        ) as later
        where _classified._source_file = later._source_file
          and _classified._source_line = later._source_line
        """
    )

    if previous is not None:
        # Rows already ingested came first in file order, so a new row whose content was seen
        # before is a later copy. Earlier rows are known by their content hash only: on the
        # stored events themselves, and in event_fingerprints for the quarantined ones.
        con.execute(
            """
            update _classified set reason = 'duplicate_event'
            where reason is null
              and _content_hash in (
                  select content_hash from raw_events
                  union all
                  select content_hash from event_fingerprints
              )
            """
        )
    rows_erased = drop_erased(con, pseudonym_key)
    counts = dict(
        con.execute(
            """
            select coalesce(reason, '_used'), count(*) from _classified group by all
            union all
            select reason, count(*) from _rejects group by all
            """
        ).fetchall()
    )
    if previous is not None:
        # Counts are cumulative, as a full rebuild would report them.
        for reason, n in con.execute(
            "select reason, count(*) from quarantined_events group by all"
        ).fetchall():
            counts[reason] = counts.get(reason, 0) + n
        counts["_used"] = counts.get("_used", 0) + previous["rows_used"]
        rows_erased += previous["rows_erased"]
        as_of = max(as_of, previous["as_of"])
    rows_used = counts.pop("_used", 0)
    rows_quarantined = sum(counts.values())
    rows_read = rows_used + rows_quarantined + rows_erased
    refuse_too_many_bad(counts, rows_quarantined, rows_read, max_bad_share)

    con.execute("begin transaction")
    try:
        if previous is None:
            for table in ("raw_events", "quarantined_events", "event_fingerprints"):
                con.execute(f"drop table if exists {table}")
        con.execute(
            f"""
            {"insert into raw_events" if previous is not None else "create table raw_events as"}
            select
                -- File number and line: unique, stable across reruns of the same files, and
                -- with no global sort (numbering rows in file order would need one).
                list_position($files, _source_file)::bigint * 1000000000000 + _source_line
                    as event_id,
                customer_id,
                item_id,
                ts::timestamp as event_ts,
                case when etype = 'purchase' and qty < 0 then 'return' else etype end as event_type,
                abs(coalesce(qty, 1)) as quantity,
                price as unit_price,
                order_id,
                val as value,
                country,
                _source_file as source_file,
                _source_line as source_line,
                $run_id as run_id,
                -- The raw row's hash: the duplicate check of later incremental ingests, and the
                -- day fingerprints of int_customer_item_daily.
                _content_hash as content_hash
            from _classified
            where reason is null
            """,
            {"run_id": run_id, "files": files},
        )
        con.execute(
            f"""
            {
                "insert into quarantined_events"
                if previous is not None
                else "create table quarantined_events as"
            }
            select _source_file as source_file, _source_line as source_line, reason,
                   customer_id, item_id, event_ts::varchar as event_ts, event_type,
                   quantity::varchar as quantity, unit_price::varchar as unit_price, order_id,
                   value::varchar as value, null::varchar as raw_line, $run_id as run_id
            from _classified
            where reason is not null
            union all
            select source_file, source_line, reason, null, null, null, null, null, null, null,
                   null, raw_line, $run_id
            from _rejects
            """,
            {"run_id": run_id},
        )
        if previous is not None:
            # The run that publishes the quarantine owns it (publishing checks one run id per
            # table); a full rebuild wrote every row with this run's id already.
            con.execute("update quarantined_events set run_id = $run_id", {"run_id": run_id})
        # Content hashes of the quarantined rows, for the duplicate check of later incremental
        # runs (every copy counts, valid or not; the stored events carry their own hash, so no
        # second table of every event is written). They carry the customer id so
        # that an erasure deletes them with the rows.
        con.execute(
            f"""
            {
                "insert into event_fingerprints"
                if previous is not None
                else "create table event_fingerprints as"
            }
            select customer_id, _content_hash as content_hash from _classified
            where reason is not null
            """
        )
        con.execute(
            "create table if not exists ingested_files (source_file varchar, size_bytes bigint, "
            "modified_ns bigint, run_id varchar)"
        )
        if previous is None:
            con.execute("delete from ingested_files")
        con.execute(
            "insert into ingested_files "
            "select unnest($f::varchar[]), unnest($size::bigint[]), unnest($mtime::bigint[]), $r",
            {
                "f": new_files,
                "size": [stats[f][0] for f in new_files],
                "mtime": [stats[f][1] for f in new_files],
                "r": run_id,
            },
        )
        con.execute(
            """
            create or replace table ingest_manifest as
            select $run_id as run_id, $as_of::date as as_of, $read::bigint as rows_read,
                   $used::bigint as rows_used, $quarantined::bigint as rows_quarantined,
                   $erased::bigint as rows_erased, $files::varchar[] as source_files,
                   now() as ingested_at, $fmt as events_format, $as_of_given as as_of_given,
                   $new_files::varchar[] as files_read_this_run
            """,
            {
                "run_id": run_id,
                "as_of": as_of,
                "read": rows_read,
                "used": rows_used,
                "quarantined": rows_quarantined,
                "erased": rows_erased,
                "files": files,
                "fmt": fmt,
                "as_of_given": as_of_given,
                "new_files": new_files,
            },
        )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise

    derive_event_items(con, fmt)
    con.execute("drop view if exists _typed")
    con.execute("drop view if exists _normalised")
    drop_landing(con, ("_landing", "_rejects", "_reject_errors", "_reject_scans", "_classified"))
    return ingest_result(
        con, files, new_files, as_of, rows_used, rows_quarantined, rows_erased, counts
    )


def drop_erased(con: duckdb.DuckDBPyConnection, key: str | None) -> int:
    """Delete the rows of customers with an erasure request from the landed data; return how many.

    They are counted, never stored: not in raw_events and not in quarantined_events.
    """
    has_table = con.execute(
        "select count(*) from information_schema.tables where table_name = 'erased_customers'"
    ).fetchall()[0][0]
    if not has_table or key is None:
        return 0
    if con.execute("select count(*) from erased_customers").fetchall()[0][0] == 0:
        return 0
    erased = con.execute(
        f"""
        delete from _classified
        where customer_id is not null
          and {pseudonym_sql("customer_id")} in (select customer_hash from erased_customers)
        """,
        {"key": key},
    ).fetchall()[0][0]
    # A malformed line cannot be parsed into a customer id; drop those that contain one as a
    # whole CSV field, so an erased customer never survives in the raw text either.
    field_id = pseudonym_sql(r"regexp_replace(trim(f.field), '\.0+$', '')")
    erased += con.execute(
        f"""
        delete from _rejects where exists (
            select 1 from erased_customers e,
                unnest(string_split(regexp_replace(raw_line, '"', '', 'g'), ',')) as f(field)
            where e.customer_hash
                = {field_id}
        )
        """,
        {"key": key},
    ).fetchall()[0][0]
    return erased
