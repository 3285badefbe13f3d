"""The incremental plan: when appending only the new daily files gives what a full rebuild
would."""

from __future__ import annotations

from datetime import date

import duckdb

from seg_pipeline.lib.ingest.formats import columns_of
from seg_pipeline.lib.ingest.results import IngestResult, ingest_result


def has_tables(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> bool:
    found = con.execute(
        "select count(*) from information_schema.tables where table_name in (select unnest($n))",
        {"n": list(names)},
    ).fetchall()[0][0]
    return found == len(names)


def incremental_plan(
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
    if fmt != "canonical" or as_of is not None or not has_tables(con, tables):
        return None
    if not {"events_format", "as_of_given"} <= set(columns_of(con, "ingest_manifest")):
        return None
    if "content_hash" not in columns_of(con, "raw_events"):
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
    if has_tables(con, ("erased_customers",)):
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


def unchanged_result(con: duckdb.DuckDBPyConnection, files: list[str], run_id: str) -> IngestResult:
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
    return ingest_result(con, files, [], as_of, rows_used, rows_quarantined, rows_erased, reasons)
