"""Read event files into DuckDB: every row ends up either in ``raw_events`` or in
``quarantined_events`` with a reason, so ``rows read = rows used + rows quarantined`` always holds.

All parsing happens in DuckDB SQL so the same code handles a few thousand rows or tens of
millions: files are first landed as text (so a bad value can never abort the load), then typed and
classified in one pass. User-supplied values (paths, codes, dates) are always bound as parameters,
never pasted into SQL.
"""

from __future__ import annotations

import glob as globlib
import gzip
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb

FORMATS = ("canonical", "online_retail")
EVENT_TYPES = ("purchase", "return", "view", "cart", "rating")

CANONICAL_REQUIRED = ("customer_id", "item_id", "event_ts")
CANONICAL_OPTIONAL = ("event_type", "quantity", "unit_price", "order_id", "value")
ONLINE_RETAIL_REQUIRED = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "CustomerID")
ONLINE_RETAIL_OPTIONAL = ("Description", "UnitPrice", "Country")
ITEMS_COLUMNS = ("item_id", "title", "description", "category", "price", "available")

# Lines of the UCI Online Retail file that are not products: postage, discounts, manual
# adjustments, fees and charity. They would otherwise top every popularity list.
ONLINE_RETAIL_NON_PRODUCT = (
    "POST",
    "DOT",
    "C2",
    "M",
    "m",
    "D",
    "S",
    "B",
    "BANK CHARGES",
    "AMAZONFEE",
    "CRUK",
    "PADS",
)

# Reason codes, in the order they are tested: a row gets the first that applies.
REASONS = {
    "malformed_row": "the CSV parser could not split the line into the header's columns",
    "invalid_encoding": "the line is not valid UTF-8",
    "missing_item_id": "item_id is empty",
    "non_product": "the item is a non-product line (postage, fee, discount, adjustment)",
    "bad_timestamp": "event_ts is empty or not an ISO 8601 timestamp",
    "unknown_event_type": "event_type is not purchase, return, view, cart or rating",
    "bad_quantity": "quantity is not a number",
    "zero_quantity": "quantity is zero",
    "bad_price": "unit_price is not a number, or is negative",
    "bad_value": "value is not a number, or a rating has no value",
    "missing_customer_id": "a rating needs a customer_id",
    "after_as_of": "the event is on or after the as_of date",
    "duplicate_event": "an identical row appeared earlier in the input",
}


class IngestError(ValueError):
    """An input problem the user must fix; its message is one readable line."""


@dataclass
class IngestResult:
    """Counts of one ingest; ``rows_read == rows_used + rows_quarantined + rows_erased``."""

    files: list[str]
    rows_read: int
    rows_used: int
    rows_quarantined: int
    as_of: date
    rows_erased: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    anonymous_rows: int = 0
    n_customers: int = 0
    n_items: int = 0
    files_read: list[str] = field(default_factory=list)  # this run (incremental: new ones)


def resolve_sources(pattern: str | Path) -> list[str]:
    """Expand a path or glob into a sorted list of readable, non-empty event files.

    Raises
    ------
    IngestError
        When nothing matches, a file is missing or empty, a gzip file is truncated, or the
        extension is not CSV, gzip CSV or Parquet.
    """
    text = str(pattern)
    if any(ch in text for ch in "*?["):
        files = sorted(globlib.glob(text, recursive=True))
        if not files:
            raise IngestError(f"no files match the glob '{text}'")
    else:
        if not Path(text).exists():
            raise IngestError(f"events file '{text}' does not exist")
        files = [text]
    folders = [f for f in files if Path(f).is_dir()]
    if folders:
        raise IngestError(
            f"'{folders[0]}' is a folder; give a file or a glob such as '{folders[0]}/*.csv'"
        )
    kinds = {_kind(f) for f in files}
    if len(kinds) > 1:
        raise IngestError(f"'{text}' mixes CSV and Parquet files; give one kind at a time")
    for f in files:
        path = Path(f)
        if path.stat().st_size == 0:
            raise IngestError(f"events file '{f}' is empty")
        if _kind(f) == "gzip":
            _check_gzip(path)
    return [str(Path(f).resolve()) for f in files]


def _kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".gz"):
        return "gzip"
    if lower.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise IngestError(f"'{path}' is not a CSV (.csv, .csv.gz) or Parquet (.parquet) file")


def _check_gzip(path: Path) -> None:
    """Read a gzip file to the end so a truncated download fails here with a clear message."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise IngestError(f"'{path}' is not a complete gzip file ({exc})") from exc


def _drop_landing(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """Drop the temporary landing objects (``_landing`` is a view for Parquet, else a table)."""
    views = {row[0] for row in con.execute("select view_name from duckdb_views()").fetchall()}
    for name in names:
        con.execute(f"drop {'view' if name in views else 'table'} if exists {name}")


def _land(con: duckdb.DuckDBPyConnection, files: list[str]) -> None:
    """Land the files as ``_landing`` plus ``_rejects`` with exact line numbers.

    CSV lands as an all-text table (line numbers need the rejects first). Parquet lands as a
    view over the files: its rows are read once, by the classifying pass, instead of being
    copied into a table first (ingest at 10M events: 13.6-15.3 s instead of 17.7-20.4 s).
    """
    _drop_landing(con, ("_landing", "_landing_raw", "_rejects", "_reject_errors", "_reject_scans"))
    if _kind(files[0]) == "parquet":
        # A view cannot take a prepared parameter: the file list is a quoted literal.
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        try:
            con.execute(
                f"""
                create temp view _landing as
                select * exclude (filename, file_row_number),
                    filename as _source_file,
                    file_row_number + 1 as _source_line
                from read_parquet([{listed}], filename = true, file_row_number = true,
                                  union_by_name = true)
                """
            )
        except duckdb.Error as exc:
            raise IngestError(f"cannot read Parquet input: {_first_line(exc)}") from exc
        con.execute(
            "create temp table _rejects (source_file varchar, source_line bigint, "
            "reason varchar, raw_line varchar)"
        )
        return

    try:
        con.execute(
            """
            create temp table _landing_raw as
            select * from read_csv($files, header = true, all_varchar = true, filename = true,
                                   store_rejects = true,
                                   rejects_table = '_reject_errors', rejects_scan = '_reject_scans')
            """,
            {"files": files},
        )
    except duckdb.Error as exc:
        raise IngestError(f"cannot read CSV input: {_first_line(exc)}") from exc
    con.execute(
        """
        create temp table _rejects as
        select
            s.file_path as source_file,
            e.line::bigint as source_line,
            -- A line can fail on several columns; it is one rejected row all the same.
            case when bool_or(e.error_type = 'INVALID ENCODING') then 'invalid_encoding'
                 else 'malformed_row' end as reason,
            any_value(e.csv_line) as raw_line
        from _reject_errors e
        join _reject_scans s using (scan_id, file_id)
        group by s.file_path, e.line
        """
    )
    # read_csv keeps rows in file order; rowid gives each row's ordinal. The line number is that
    # ordinal plus the header plus the rejected lines that came before it in the same file.
    con.execute(
        """
        create temp table _landing as
        with ordered as (
            select *, rowid - min(rowid) over (partition by filename) + 1 as _ordinal
            from _landing_raw
        ),
        rejected as (
            select source_file, source_line,
                   row_number() over (partition by source_file order by source_line) as i
            from (select distinct source_file, source_line from _rejects)
        ),
        gaps as (
            select source_file, source_line - 1 - i as good_before, max(i) as i
            from rejected group by all
        )
        select ordered.* exclude (filename, _ordinal),
            ordered.filename as _source_file,
            ordered._ordinal + 1 + coalesce(gaps.i, 0) as _source_line
        from ordered
        asof left join gaps
            on ordered.filename = gaps.source_file and ordered._ordinal > gaps.good_before
        """
    )
    con.execute("drop table _landing_raw")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"describe {table}").fetchall()]


def _text(cols: Collection[str], name: str) -> str:
    """SQL for a trimmed, NULL-if-blank text column, or NULL when the file lacks the column."""
    if name in cols:
        return f"nullif(trim(\"{name}\"::varchar), '')"
    return "null::varchar"


# Landed types that need no parsing: Parquet's typed columns are used as they are.
_NATIVE = {
    "event_ts": ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "DATE"),
    "quantity": ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "HUGEINT"),
}
_NATIVE["unit_price"] = _NATIVE["value"] = _NATIVE["quantity"]


def _typed_or_text(cols: dict[str, str], name: str) -> str:
    """The column itself when its landed type is already the canonical one, else ``_text``.

    Printing a typed timestamp or number as text only to parse it back took about 4 s of the
    10 s type-and-classify pass at 10M Parquet rows.
    """
    if cols.get(name, "").upper() in _NATIVE.get(name, ()):
        return f'"{name}"'
    return _text(cols, name)


def _timestamp_sql(landed_type: str | None) -> str:
    """SQL for ``n.event_ts`` as a UTC timestamp, NULL when it does not parse.

    Text with an offset is converted to UTC, text without one is taken as UTC. A typed column is
    only converted (casting a typed timestamp through timestamptz cost 1 s per 10M rows).
    """
    landed = (landed_type or "").upper()
    if landed == "TIMESTAMP WITH TIME ZONE":
        return "n.event_ts at time zone 'UTC'"
    if landed in _NATIVE["event_ts"]:
        return "n.event_ts::timestamp"
    return (
        "coalesce(try_cast(n.event_ts as timestamptz) at time zone 'UTC', "
        "try_cast(n.event_ts as timestamp))"
    )


def _normalised_select(fmt: str, cols: dict[str, str]) -> str:
    """SQL that maps the landed columns (name → type) onto the canonical columns.

    Columns are text, except typed Parquet timestamps and numbers, which keep their type.
    """
    if fmt == "canonical":
        return f"""
            select
                {_text(cols, "customer_id")} as customer_id,
                {_text(cols, "item_id")} as item_id,
                {_typed_or_text(cols, "event_ts")} as event_ts,
                {_text(cols, "event_type")} as event_type,
                {_typed_or_text(cols, "quantity")} as quantity,
                {_typed_or_text(cols, "unit_price")} as unit_price,
                {_text(cols, "order_id")} as order_id,
                {_typed_or_text(cols, "value")} as value,
                null::varchar as description,
                null::varchar as country,
                _source_file, _source_line
            from _landing
        """
    customer = _text(cols, "CustomerID")
    invoice = _text(cols, "InvoiceNo")
    return f"""
        select
            regexp_replace({customer}, '\\.0+$', '') as customer_id,
            {_text(cols, "StockCode")} as item_id,
            {_text(cols, "InvoiceDate")} as event_ts,
            case when upper({invoice}) like 'C%' then 'return' else 'purchase' end as event_type,
            {_text(cols, "Quantity")} as quantity,
            {_text(cols, "UnitPrice")} as unit_price,
            {invoice} as order_id,
            null::varchar as value,
            {_text(cols, "Description")} as description,
            {_text(cols, "Country")} as country,
            _source_file, _source_line
        from _landing
    """


def _check_columns(fmt: str, cols: list[str], files: list[str]) -> None:
    required = CANONICAL_REQUIRED if fmt == "canonical" else ONLINE_RETAIL_REQUIRED
    missing = [c for c in required if c not in cols]
    if missing:
        found = ", ".join(c for c in cols if not c.startswith("_")) or "none"
        hint = ""
        if len([c for c in cols if not c.startswith("_")]) == 1:
            hint = " (only one column was found: is the delimiter a comma?)"
        other = "online_retail" if fmt == "canonical" else "canonical"
        other_req = ONLINE_RETAIL_REQUIRED if fmt == "canonical" else CANONICAL_REQUIRED
        if all(c in cols for c in other_req):
            hint = f" (the file looks like the '{other}' format: pass --format {other})"
        raise IngestError(
            f"{fmt} events are missing required column(s) {', '.join(missing)} in "
            f"{Path(files[0]).name}{'…' if len(files) > 1 else ''}; found: {found}{hint}"
        )


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
    rows; the tables end up as a full rebuild would make them (``_incremental_plan`` says when
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
        Append only new files when the earlier ingest allows it (see ``_incremental_plan``).

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
    stats = {f: _file_stat(f) for f in files}
    previous = _incremental_plan(con, files, stats, fmt, as_of) if incremental else None
    new_files = files if previous is None else [f for f in files if f not in previous["files"]]
    if previous is not None and not new_files:
        return _unchanged_result(con, files, run_id)
    _land(con, new_files)
    col_types = dict(
        con.execute("select column_name, column_type from (describe _landing)").fetchall()
    )
    cols = list(col_types)
    _check_columns(fmt, cols, files)

    n_landed = con.execute(
        "select (select count(*) from _landing) + (select count(*) from _rejects)"
    ).fetchall()[0][0]
    if n_landed == 0 and previous is None:
        raise IngestError(f"no event rows in {', '.join(Path(f).name for f in files)}")
    con.execute(f"create or replace temp view _normalised as {_normalised_select(fmt, col_types)}")
    con.execute(
        f"""
        create or replace temp view _typed as
        select
            n.*,
            {_timestamp_sql(col_types.get("event_ts") if fmt == "canonical" else None)} as ts,
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
        _classify(con, non_product_items)
    except (duckdb.IOException, duckdb.InvalidInputException) as exc:
        # Parquet rows are first read here (the landing is a view): a damaged data page fails now.
        raise IngestError(f"cannot read input: {_first_line(exc)}") from exc
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
    rows_erased = _drop_erased(con, pseudonym_key)
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
    if rows_quarantined > max_bad_share * rows_read:
        top = ", ".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        raise IngestError(
            f"{rows_quarantined} of {rows_read} rows ({rows_quarantined / rows_read:.0%}) are bad, "
            f"above the {max_bad_share:.0%} limit; nothing was published ({top})"
        )

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
                -- with no global sort (numbering rows in file order took 10 s at 10M rows).
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
        # runs (every copy counts, valid or not; the stored events carry their own hash, which
        # spared a second 10M-row table at 10M events, 1.5 s). They carry the customer id so
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

    _derive_event_items(con, fmt)
    con.execute("drop view if exists _typed")
    con.execute("drop view if exists _normalised")
    _drop_landing(con, ("_landing", "_rejects", "_reject_errors", "_reject_scans", "_classified"))
    return _result(con, files, new_files, as_of, rows_used, rows_quarantined, rows_erased, counts)


def _classify(con: duckdb.DuckDBPyConnection, non_product_items: tuple[str, ...]) -> None:
    """Type every landed row and give the bad ones their quarantine reason (``_classified``)."""
    con.execute(
        """
        create or replace temp table _classified as
        select *,
            case
                when item_id is null then 'missing_item_id'
                when list_contains($non_products, item_id) then 'non_product'
                when ts is null then 'bad_timestamp'
                when etype not in ('purchase', 'return', 'view', 'cart', 'rating')
                    then 'unknown_event_type'
                when quantity is not null and qty is null then 'bad_quantity'
                when qty = 0 then 'zero_quantity'
                when unit_price is not null and (price is null or price < 0) then 'bad_price'
                when (value is not null and val is null) or (etype = 'rating' and val is null)
                    then 'bad_value'
                when etype = 'rating' and customer_id is null then 'missing_customer_id'
            end as reason,
            hash(customer_id, item_id, event_ts, event_type, quantity, unit_price, order_id,
                 value, description) as _content_hash
        from _typed
        """,
        {"non_products": list(non_product_items)},
    )


def _result(con, files, files_read, as_of, rows_used, rows_quarantined, rows_erased, reasons):
    """The ingest's counts, with the customers and items now in ``raw_events``."""
    anonymous, n_customers, n_items = con.execute(
        "select count(*) filter (where customer_id is null), count(distinct customer_id), "
        "count(distinct item_id) from raw_events"
    ).fetchall()[0]
    return IngestResult(
        files=files,
        rows_read=rows_used + rows_quarantined + rows_erased,
        rows_used=rows_used,
        rows_quarantined=rows_quarantined,
        as_of=as_of,
        rows_erased=rows_erased,
        reasons=reasons,
        anonymous_rows=anonymous,
        n_customers=n_customers,
        n_items=n_items,
        files_read=files_read,
    )


def _file_stat(path: str) -> tuple[int, int]:
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns


def _has_tables(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> bool:
    found = con.execute(
        "select count(*) from information_schema.tables where table_name in (select unnest($n))",
        {"n": list(names)},
    ).fetchall()[0][0]
    return found == len(names)


def _incremental_plan(
    con: duckdb.DuckDBPyConnection,
    files: list[str],
    stats: dict[str, tuple[int, int]],
    fmt: str,
    as_of: date | None,
) -> dict | None:
    """The earlier ingest, when appending only the new files gives what a full rebuild would.

    That holds when: the format is canonical and was the same last time; no as_of was given,
    now or then (a fixed as_of can quarantine rows that a later as_of would accept); every file
    read before is still there, unchanged (size and modification time); and every new file
    sorts after all of them, so file order is ingestion order and the first copy of a
    duplicate is always the one already stored. Otherwise returns None: read everything again.
    """
    tables = (
        "raw_events",
        "quarantined_events",
        "event_fingerprints",
        "ingest_manifest",
        "ingested_files",
    )
    if fmt != "canonical" or as_of is not None or not _has_tables(con, tables):
        return None
    if not {"events_format", "as_of_given"} <= set(_columns(con, "ingest_manifest")):
        return None
    if "content_hash" not in _columns(con, "raw_events"):
        return None  # stored by an older version: read everything again
    manifest = con.execute(
        "select events_format, as_of_given, as_of, rows_used, rows_erased, ingested_at "
        "from ingest_manifest"
    ).fetchall()
    if len(manifest) != 1:
        return None
    events_format, as_of_given, previous_as_of, rows_used, rows_erased, ingested_at = manifest[0]
    if events_format != fmt or as_of_given:
        return None
    # An erasure since then deleted rows behind the stored counts: recount from the files.
    if _has_tables(con, ("erased_customers",)):
        erased_since = con.execute(
            "select count(*) from erased_customers where requested_at >= $t::timestamp",
            {"t": ingested_at},
        ).fetchall()[0][0]
        if erased_since:
            return None
    seen = {
        f: (size, mtime)
        for f, size, mtime in con.execute(
            "select source_file, size_bytes, modified_ns from ingested_files"
        ).fetchall()
    }
    if not seen or any(stats.get(f) != stat for f, stat in seen.items()):
        return None
    new = [f for f in files if f not in seen]
    if new and min(new) <= max(seen):
        return None
    return {
        "files": set(seen),
        "as_of": previous_as_of,
        "rows_used": rows_used,
        "rows_erased": rows_erased,
    }


def _unchanged_result(
    con: duckdb.DuckDBPyConnection, files: list[str], run_id: str
) -> IngestResult:
    """Nothing new since the last ingest: its tables stand, and so do its counts."""
    as_of, rows_used, rows_quarantined, rows_erased = con.execute(
        "select as_of, rows_used, rows_quarantined, rows_erased from ingest_manifest"
    ).fetchall()[0]
    con.execute(
        "update ingest_manifest set files_read_this_run = []::varchar[], run_id = $r",
        {"r": run_id},
    )
    con.execute("update quarantined_events set run_id = $r", {"r": run_id})
    reasons = dict(
        con.execute("select reason, count(*) from quarantined_events group by all").fetchall()
    )
    return _result(con, files, [], as_of, rows_used, rows_quarantined, rows_erased, reasons)


def _drop_erased(con: duckdb.DuckDBPyConnection, key: str | None) -> int:
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
        """
        delete from _classified
        where customer_id is not null
          and sha256($key || ':' || customer_id) in (select customer_hash from erased_customers)
        """,
        {"key": key},
    ).fetchall()[0][0]
    # A malformed line cannot be parsed into a customer id; drop those that contain one as a
    # whole CSV field, so an erased customer never survives in the raw text either.
    erased += con.execute(
        """
        delete from _rejects where exists (
            select 1 from erased_customers e,
                unnest(string_split(regexp_replace(raw_line, '"', '', 'g'), ',')) as f(field)
            where e.customer_hash
                = sha256($key || ':' || regexp_replace(trim(f.field), '\\.0+$', ''))
        )
        """,
        {"key": key},
    ).fetchall()[0][0]
    return erased


def _derive_event_items(con: duckdb.DuckDBPyConnection, fmt: str) -> None:
    """Keep the item descriptions that came inside the events (Online Retail) for the catalogue.

    An item's title is its most frequent description, and among equally frequent ones the first
    in alphabetical order. ``mode()`` picked among ties by the order its parallel partial results
    met, so the same file could give an item another title (and the content model other
    neighbours) from one run to the next.
    """
    if fmt == "online_retail":
        con.execute(
            """
            create or replace table _event_item_text as
            with used as (
                select item_id, description, price from _classified where reason is null
            ),
            descriptions as (
                select item_id, description, count(*) as n
                from used where description is not null
                group by all
            ),
            titles as (
                select item_id, first(description order by n desc, description) as title
                from descriptions
                group by item_id
            ),
            prices as (
                select item_id, median(price) filter (where price > 0) as price
                from used
                group by item_id
            )
            select item_id, titles.title, prices.price
            from prices left join titles using (item_id)
            """
        )
    else:
        con.execute(
            "create or replace table _event_item_text as "
            "select null::varchar as item_id, null::varchar as title, null::double as price "
            "where false"
        )


def ingest_items(con: duckdb.DuckDBPyConnection, items: str | Path | None, *, run_id: str) -> int:
    """Write ``raw_items`` from the items file, or from the events' own descriptions.

    Returns the number of items written. Item ids must be unique in the file: a repeated id
    raises rather than silently keeping one of the rows.
    """
    if items is None:
        con.execute(
            """
            create or replace table raw_items as
            select item_id, title, title as description, null::varchar as category,
                   price, true as available, $run_id as run_id
            from _event_item_text
            """,
            {"run_id": run_id},
        )
    else:
        files = resolve_sources(items)
        reader = (
            "read_parquet($files)"
            if _kind(files[0]) == "parquet"
            else ("read_csv($files, header = true, all_varchar = true)")
        )
        try:
            con.execute(
                f"create or replace temp table _items_landing as select * from {reader}",
                {"files": files},
            )
        except duckdb.Error as exc:
            raise IngestError(f"cannot read items file: {_first_line(exc)}") from exc
        cols = _columns(con, "_items_landing")
        if "item_id" not in cols:
            raise IngestError(f"items file has no item_id column; found: {', '.join(cols)}")
        dupes = con.execute(
            "select item_id, count(*) from _items_landing group by all having count(*) > 1 limit 3"
        ).fetchall()
        if dupes:
            raise IngestError(
                f"items file repeats item_id(s) {', '.join(str(d[0]) for d in dupes)}"
            )

        def col(name: str, sql_type: str) -> str:
            if name not in cols:
                return f"null::{sql_type}"
            if sql_type == "boolean":
                return (
                    f'coalesce(try_cast("{name}" as boolean), '
                    f"lower(trim(\"{name}\"::varchar)) in ('1', 'yes', 'y', 't'))"
                )
            return f'try_cast("{name}" as {sql_type})'

        con.execute(
            f"""
            create or replace table raw_items as
            select trim(item_id::varchar) as item_id,
                   {col("title", "varchar")} as title,
                   {col("description", "varchar")} as description,
                   {col("category", "varchar")} as category,
                   {col("price", "double")} as price,
                   {col("available", "boolean")} as available,
                   $run_id as run_id
            from _items_landing
            where nullif(trim(item_id::varchar), '') is not null
            """,
            {"run_id": run_id},
        )
        con.execute("drop table _items_landing")
    con.execute("drop table if exists _event_item_text")
    return con.execute("select count(*) from raw_items").fetchall()[0][0]
