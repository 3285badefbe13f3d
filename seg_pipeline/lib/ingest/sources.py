"""Finding and landing the input files: globs, gzip checks, and CSV/Parquet read as text so a
bad value can never abort the load."""

from __future__ import annotations

import glob as globlib
import gzip
import zlib
from pathlib import Path

import duckdb

from seg_pipeline.lib.ingest.results import IngestError

# RFC 4180 quoting, given rather than sniffed: DuckDB's sniffer looks at the first rows only, and
# a file whose first quoted field (a title with a comma) comes later was read without quotes,
# failing on that row (items) or quarantining it (events).
CSV_QUOTING = "quote = '\"', escape = '\"'"


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
    kinds = {file_kind(f) for f in files}
    if len(kinds) > 1:
        raise IngestError(f"'{text}' mixes CSV and Parquet files; give one kind at a time")
    for f in files:
        path = Path(f)
        if path.stat().st_size == 0:
            raise IngestError(f"events file '{f}' is empty")
        if file_kind(f) == "gzip":
            check_gzip(path)
    return [str(Path(f).resolve()) for f in files]


def file_kind(path: str) -> str:
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".gz"):
        return "gzip"
    if lower.endswith((".csv", ".tsv", ".txt")):
        return "csv"
    raise IngestError(f"'{path}' is not a CSV (.csv, .csv.gz) or Parquet (.parquet) file")


def check_gzip(path: Path) -> None:
    """Read a gzip file to the end so a truncated download fails here with a clear message."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise IngestError(f"'{path}' is not a complete gzip file ({exc})") from exc


def drop_landing(con: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> None:
    """Drop the temporary landing objects (``_landing`` is a view for Parquet, else a table)."""
    views = {row[0] for row in con.execute("select view_name from duckdb_views()").fetchall()}
    for name in names:
        con.execute(f"drop {'view' if name in views else 'table'} if exists {name}")


def land(con: duckdb.DuckDBPyConnection, files: list[str]) -> None:
    """Land the files as ``_landing`` plus ``_rejects`` with exact line numbers.

    CSV lands as an all-text table (line numbers need the rejects first). Parquet lands as a
    view over the files: its rows are read once, by the classifying pass, instead of being
    copied into a table first.
    """
    drop_landing(con, ("_landing", "_landing_raw", "_rejects", "_reject_errors", "_reject_scans"))
    if file_kind(files[0]) == "parquet":
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
            raise IngestError(f"cannot read Parquet input: {first_line(exc)}") from exc
        con.execute(
            "create temp table _rejects (source_file varchar, source_line bigint, "
            "reason varchar, raw_line varchar)"
        )
        return

    try:
        con.execute(
            f"""
            create temp table _landing_raw as
            select * from read_csv($files, header = true, all_varchar = true, filename = true,
                                   {CSV_QUOTING}, store_rejects = true,
                                   rejects_table = '_reject_errors', rejects_scan = '_reject_scans')
            """,
            {"files": files},
        )
    except duckdb.Error as exc:
        raise IngestError(f"cannot read CSV input: {first_line(exc)}") from exc
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


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def file_stat(path: str) -> tuple[int, int]:
    stat = Path(path).stat()
    return stat.st_size, stat.st_mtime_ns
