"""Opt-outs and erasure requests (GDPR article 17), and keyed pseudonyms for customer ids.

Erased customers are remembered only as keyed hashes, so the erasure list itself holds no customer
id, and every later ingest drops their rows before anything is stored. The hash is
``sha256(key || ':' || customer_id)``, computed the same way in Python and in DuckDB SQL so both
sides can match it without ever writing the id down.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

import duckdb

KEY_ENV = "SEG_PSEUDONYM_KEY"


def load_or_create_key(path: Path, env_value: str | None = None) -> str:
    """The pseudonymisation key: from the environment if set, else from ``path`` (created 0600)."""
    if env_value:
        return env_value
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def pseudonymise(customer_id: str, key: str) -> str:
    """Keyed hash of a customer id (hex), identical to :func:`pseudonym_sql` in DuckDB."""
    return hashlib.sha256(f"{key}:{customer_id}".encode()).hexdigest()


def pseudonym_sql(column: str) -> str:
    """SQL for the keyed hash of ``column``; the key is bound as the ``$key`` parameter."""
    return f"sha256($key || ':' || {column})"


def read_id_list(path: str | Path) -> list[str]:
    """Customer ids from a file: a ``customer_id`` column of a CSV, or one id per line."""
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        return []
    header = [c.strip().strip('"') for c in lines[0].split(",")]
    if "customer_id" in header:
        col = header.index("customer_id")
        return [
            row.split(",")[col].strip().strip('"')
            for row in lines[1:]
            if row.split(",")[col].strip()
        ]
    return lines


def ensure_privacy_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the erasure and opt-out tables if this database has none yet."""
    con.execute(
        "create table if not exists erased_customers "
        "(customer_hash varchar primary key, requested_at timestamp)"
    )
    con.execute(
        "create table if not exists opted_out_customers (customer_hash varchar primary key)"
    )


def replace_opt_outs(con: duckdb.DuckDBPyConnection, customer_ids: list[str], key: str) -> int:
    """Make ``opted_out_customers`` hold exactly these customers (hashed); return the count."""
    ensure_privacy_tables(con)
    hashes = sorted({pseudonymise(c, key) for c in customer_ids})
    con.execute("begin transaction")
    con.execute("delete from opted_out_customers")
    if hashes:
        con.execute("insert into opted_out_customers select unnest($h::varchar[])", {"h": hashes})
    con.execute("commit")
    return len(hashes)


def _customer_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        """
        select distinct c.table_name from information_schema.columns c
        join information_schema.tables t using (table_catalog, table_schema, table_name)
        where c.column_name = 'customer_id' and t.table_type = 'BASE TABLE'
          and c.table_schema = 'main' and c.table_catalog = current_database()
        order by 1
        """
    ).fetchall()
    return [r[0] for r in rows]


def erase_customers(
    con: duckdb.DuckDBPyConnection, customer_ids: list[str], key: str
) -> dict[str, int]:
    """Record erasure requests and delete the customers from every table that has a customer_id.

    Malformed quarantined lines keep their raw text, so lines that contain the id as a whole CSV
    field are deleted too. Returns rows deleted per table.
    """
    ensure_privacy_tables(con)
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    con.execute("begin transaction")
    try:
        con.execute(
            "insert or ignore into erased_customers select unnest($h::varchar[]), now()::timestamp",
            {"h": [pseudonymise(c, key) for c in ids]},
        )
        deleted: dict[str, int] = {}
        for table in _customer_tables(con):
            n = con.execute(
                f'delete from "{table}" where customer_id in (select unnest($ids::varchar[]))',
                {"ids": ids},
            ).fetchall()[0][0]
            if n:
                deleted[table] = n
        has_raw = con.execute(
            "select count(*) from information_schema.columns "
            "where table_name = 'quarantined_events' and column_name = 'raw_line'"
        ).fetchall()[0][0]
        if has_raw:
            patterns = [rf'(^|,)"?{re.escape(c)}(\.0+)?"?(,|$)' for c in ids]
            n = con.execute(
                "delete from quarantined_events where raw_line is not null and "
                "list_bool_or(list_transform($p::varchar[], "
                "lambda x: regexp_matches(raw_line, x)))",
                {"p": patterns},
            ).fetchall()[0][0]
            if n:
                deleted["quarantined_events"] = deleted.get("quarantined_events", 0) + n
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return deleted


def artifacts_mentioning(root: Path, customer_ids: list[str]) -> list[Path]:
    """Files under ``root`` whose text contains one of the ids as a whole word."""
    if not root.exists():
        return []
    pattern = re.compile(
        rb"(?<![\w.])(" + b"|".join(re.escape(c.encode()) for c in customer_ids) + rb")(?![\w])"
    )
    return [p for p in root.rglob("*") if p.is_file() and pattern.search(p.read_bytes())]


def forget_customers(
    con: duckdb.DuckDBPyConnection,
    customer_ids: list[str],
    key: str,
    *,
    published: Path,
    artifact_root: Path | None = None,
) -> dict:
    """Erase customers everywhere: working tables, the published file, and check MLflow artefacts.

    Returns a report with rows deleted per table, the republished tables and any artefact files
    that still mention an id (the pipeline logs none, so this list should be empty).
    """
    from seg_pipeline.lib.published_file import republish

    deleted = erase_customers(con, customer_ids, key)
    con.execute("checkpoint")
    republished = republish(con, published)
    leftovers = artifacts_mentioning(artifact_root, customer_ids) if artifact_root else []
    return {
        "deleted": deleted,
        "republished": republished,
        "artifacts_mentioning": [str(p) for p in leftovers],
    }
