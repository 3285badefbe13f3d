"""Read the optional impressions file: which recommended items customers were shown, and whether
they clicked or bought.

Columns: ``customer_id``, ``item_id``, ``shown_at`` (required), ``clicked`` and ``purchased``
(optional, true/false, 1/0, yes/no; empty is false). CSV, gzip CSV or Parquet, or a glob, as for
events. Every row ends in ``raw_impressions`` or in ``quarantined_impressions`` with a reason, so
``rows read = rows used + rows quarantined``; the rows of customers with an erasure request are
dropped and only counted. The file is the whole log: each run replaces both tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from seg_pipeline.lib.ingest.formats import columns_of
from seg_pipeline.lib.ingest.incremental import has_tables
from seg_pipeline.lib.ingest.results import IngestError
from seg_pipeline.lib.ingest.sources import drop_landing, land, resolve_sources
from seg_pipeline.lib.privacy import pseudonym_sql

REQUIRED = ("customer_id", "item_id", "shown_at")
FLAGS = ("clicked", "purchased")
IMPRESSION_REASONS = (
    "malformed_row",
    "invalid_encoding",
    "missing_customer_id",
    "missing_item_id",
    "bad_timestamp",
    "bad_flag",
    "duplicate_impression",
)
_TRUE = "('true', 't', '1', 'yes', 'y')"
_FALSE = "('false', 'f', '0', 'no', 'n', '')"


@dataclass
class ImpressionsResult:
    rows_read: int
    rows_used: int
    rows_quarantined: int
    rows_erased: int
    reasons: dict[str, int]


def ingest_impressions(
    con: duckdb.DuckDBPyConnection,
    impressions: str | Path,
    *,
    run_id: str,
    max_bad_share: float = 0.5,
    pseudonym_key: str | None = None,
) -> ImpressionsResult:
    """Replace ``raw_impressions`` and ``quarantined_impressions`` from the file(s), in one
    transaction. Raises ``IngestError`` on a missing column or when more than
    ``max_bad_share`` of the rows are bad."""
    files = resolve_sources(impressions)
    land(con, files)
    cols = set(columns_of(con, "_landing"))
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise IngestError(
            f"impressions file lacks the column(s) {', '.join(missing)}; it needs "
            f"{', '.join(REQUIRED)} and optionally {', '.join(FLAGS)}"
        )

    def text(name: str) -> str:
        return f"nullif(trim({name}::varchar), '')" if name in cols else "null::varchar"

    def flag(name: str) -> str:
        return f"lower(coalesce(trim({name}::varchar), ''))" if name in cols else "''"

    con.execute(
        f"""
        create or replace temp table _impressions as
        select
            _source_file as source_file, _source_line as source_line,
            {text("customer_id")} as customer_id,
            regexp_replace({text("item_id")}, '\\.0+$', '') as item_id,
            {text("shown_at")} as shown_at_text,
            try_cast({text("shown_at")} as timestamp) as shown_at,
            {flag("clicked")} as clicked_text,
            {flag("purchased")} as purchased_text
        from _landing
        """
    )
    rows_erased = 0
    if pseudonym_key is not None and has_tables(con, ("erased_customers",)):
        rows_erased = con.execute(
            f"""
            delete from _impressions where customer_id is not null
              and {pseudonym_sql("customer_id")} in (select customer_hash from erased_customers)
            """,
            {"key": pseudonym_key},
        ).fetchall()[0][0]
    con.execute(
        f"""
        create or replace temp table _impressions_classified as
        select *,
            case
                when customer_id is null then 'missing_customer_id'
                when item_id is null then 'missing_item_id'
                when shown_at is null then 'bad_timestamp'
                when clicked_text not in {_TRUE} and clicked_text not in {_FALSE}
                  or purchased_text not in {_TRUE} and purchased_text not in {_FALSE}
                  then 'bad_flag'
                when row_number() over (
                    partition by customer_id, item_id, shown_at
                    order by source_file, source_line) > 1 then 'duplicate_impression'
            end as reason
        from _impressions
        """
    )
    n_landed, n_bad, n_rejects = con.execute(
        "select count(*), count(reason), (select count(*) from _rejects) "
        "from _impressions_classified"
    ).fetchall()[0]
    rows_read = n_landed + n_rejects + rows_erased
    bad = n_bad + n_rejects
    if rows_read - rows_erased and bad > max_bad_share * (rows_read - rows_erased):
        raise IngestError(
            f"{bad} of {rows_read - rows_erased} impression rows are unusable (more than "
            f"{max_bad_share:.0%}); see the reasons by running with a higher max_bad_share"
        )
    con.execute("begin transaction")
    con.execute(
        f"""
        create or replace table raw_impressions as
        select customer_id, item_id, shown_at,
               clicked_text in {_TRUE} as clicked, purchased_text in {_TRUE} as purchased,
               source_file, source_line, $run_id as run_id
        from _impressions_classified where reason is null
        order by shown_at, customer_id, item_id
        """,
        {"run_id": run_id},
    )
    con.execute(
        """
        create or replace table quarantined_impressions as
        select source_file, source_line, reason, customer_id, item_id, shown_at_text as shown_at,
               clicked_text as clicked, purchased_text as purchased, null::varchar as raw_line,
               $run_id as run_id
        from _impressions_classified where reason is not null
        union all
        select source_file, source_line, reason, null, null, null, null, null, raw_line, $run_id
        from _rejects
        order by source_file, source_line
        """,
        {"run_id": run_id},
    )
    _manifest(con, rows_read, rows_erased, files, run_id)
    con.execute("commit")
    reasons = dict(
        con.execute(
            "select reason, count(*) from quarantined_impressions group by 1 order by 1"
        ).fetchall()
    )
    drop_landing(con, ("_landing", "_rejects", "_impressions", "_impressions_classified"))
    return ImpressionsResult(
        rows_read=rows_read,
        rows_used=n_landed - n_bad,
        rows_quarantined=bad,
        rows_erased=rows_erased,
        reasons=reasons,
    )


def no_impressions(con: duckdb.DuckDBPyConnection, *, run_id: str) -> ImpressionsResult:
    """A run without an impressions file: both tables exist, empty."""
    con.execute(
        """
        create or replace table raw_impressions (customer_id varchar, item_id varchar,
            shown_at timestamp, clicked boolean, purchased boolean, source_file varchar,
            source_line bigint, run_id varchar)
        """
    )
    con.execute(
        """
        create or replace table quarantined_impressions (source_file varchar,
            source_line bigint, reason varchar, customer_id varchar, item_id varchar,
            shown_at varchar, clicked varchar, purchased varchar, raw_line varchar,
            run_id varchar)
        """
    )
    _manifest(con, 0, 0, [], run_id)
    return ImpressionsResult(0, 0, 0, 0, {})


def _manifest(con, rows_read: int, rows_erased: int, files: list[str], run_id: str) -> None:
    """What was read, for the check that recounts both tables against it."""
    con.execute(
        "create or replace table impressions_manifest as select $read::bigint as rows_read, "
        "$erased::bigint as rows_erased, $files as source_files, $run_id as run_id",
        {"read": rows_read, "erased": rows_erased, "files": ", ".join(files), "run_id": run_id},
    )
