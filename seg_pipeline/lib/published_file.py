"""Publish tables to the consumers' DuckDB file by building a new file and swapping it in.

DuckDB allows one writer process and locks the file while it writes, so a consumer that opened the
file during a nightly run would block the run or fail. Instead, the pipeline works in a private
file and, at the end, copies the finished tables into a fresh file beside the published one and
renames it over the old file. A rename is atomic on POSIX: a reader sees either yesterday's file or
today's, complete, never a mix, and a reader that already has the old file open keeps reading it.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

import duckdb

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def _quote_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def check_identifier(name: str) -> str:
    """Return ``name`` if it is a plain lowercase SQL identifier, else raise ``ValueError``."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a valid table name (lowercase letters, digits, _)")
    return name


def publish_tables(
    con: duckdb.DuckDBPyConnection,
    published: Path,
    tables: list[str],
    *,
    run_id: str,
) -> dict[str, int]:
    """Copy ``tables`` from ``con``'s database into a new file and atomically replace ``published``.

    A ``publication`` table in the new file records the run id, time and row counts. Returns the
    row count of each published table.
    """
    tables = [check_identifier(t) for t in tables]
    published = Path(published).resolve()
    published.parent.mkdir(parents=True, exist_ok=True)
    tmp = published.with_name(f".{published.name}.{uuid.uuid4().hex}.tmp")
    counts: dict[str, int] = {}
    con.execute(f"attach {_quote_path(tmp)} as publish_target")
    try:
        for table in tables:
            con.execute(f"create table publish_target.main.{table} as select * from main.{table}")
            counts[table] = con.execute(
                f"select count(*) from publish_target.main.{table}"
            ).fetchall()[0][0]
        con.execute(
            """
            create table publish_target.main.publication as
            select $run_id as run_id, now()::timestamp as published_at,
                   unnest($tables::varchar[]) as table_name, unnest($counts::bigint[]) as row_count
            """,
            {"run_id": run_id, "tables": list(counts), "counts": list(counts.values())},
        )
        con.execute("detach publish_target")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, published)
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("detach publish_target")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    return counts


def published_run(published: Path) -> tuple[str, list[str]] | None:
    """The run id and table names of the currently published file, or None if there is none."""
    published = Path(published)
    if not published.exists():
        return None
    reader = duckdb.connect(str(published), read_only=True)
    try:
        rows = reader.execute("select run_id, table_name from publication").fetchall()
    finally:
        reader.close()
    return (rows[0][0], [r[1] for r in rows]) if rows else None


def republish(con: duckdb.DuckDBPyConnection, published: Path) -> dict[str, int]:
    """Publish the working tables again under the current run id (after an erasure)."""
    current = published_run(published)
    if current is None:
        return {}
    run_id, tables = current
    return publish_tables(con, published, tables, run_id=run_id)
