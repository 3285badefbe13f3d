"""How the dbt step calls dbt: the executable, the vars and the target folder, in one place.

This module imports nothing heavy, so the CLI can start ``dbt parse`` for tonight's run before
it imports Dagster (see ``start_parse``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from seg_pipeline.lib.paths import DBT_PROJECT_DIR


def dbt_executable() -> str:
    """The dbt installed beside this Python, so an unactivated virtualenv still finds it."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def dbt_vars(work_path: Path, run_id: str, **overrides) -> str:
    """The ``--vars`` of a run: its working database and run id (stamped on every mart row),
    and any of the project's vars that the run's config overrides."""
    return json.dumps({"work_database": str(work_path), "run_id": run_id, **overrides})


def engine_target(engine: str, work_schema: str) -> tuple[list[str], dict]:
    """The dbt target arguments and vars of an engine: DuckDB's default target, or the spark
    target building into ``work_schema``."""
    if engine == "spark":
        return ["--target", "spark"], {"spark_work_schema": work_schema}
    return [], {}


def target_path(work_path: Path) -> Path:
    """One dbt target folder per working database, reused every night.

    dagster-dbt's default is a new folder per run inside the project, which grew by one folder
    (logs, manifest) each night.
    """
    return work_path.with_name(f"{work_path.stem}_dbt_target")


def dbt_command(target: Path, *args: str) -> list[str]:
    """``dbt <args>`` on this project, with its profiles, writing into ``target``."""
    return [
        dbt_executable(),
        *args,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target),
    ]


def parse_command(target: Path, *extra: str) -> list[str]:
    """``dbt parse`` of this project into ``target``, plus ``extra`` arguments."""
    return [*dbt_command(target, "parse", "--quiet"), *extra]


# Parses started by this process, by target folder, until the dbt step waits for them.
_PARSES: dict[Path, subprocess.Popen] = {}


def start_parse(
    work_path: Path, run_id: str, target: list[str] = (), extra_vars: dict | None = None
) -> None:
    """Start ``dbt parse`` with the exact vars that run ``run_id``'s ``dbt build`` will pass.

    dbt parses the whole project again whenever the vars change, and the run id changes every
    run; with a parse saved for the same vars, ``dbt build`` re-reads it instead. The CLI
    starts this before it imports the pipeline, on the core the import leaves idle; the dbt
    step waits for it (``wait_for_parse``) so that the two never write the target folder at
    once. A failed parse only costs that saving: ``dbt build``
    then parses as before. ``target`` and ``extra_vars`` are the engine's (``--target spark``).
    """
    folder = target_path(work_path)
    folder.mkdir(parents=True, exist_ok=True)
    _PARSES[folder] = subprocess.Popen(
        parse_command(
            folder,
            *target,
            "--log-path",
            str(folder),
            "--vars",
            dbt_vars(work_path, run_id, **(extra_vars or {})),
        ),
        cwd=DBT_PROJECT_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_parse(work_path: Path) -> None:
    """Wait for a parse this process started for ``work_path`` (``start_parse``), if any."""
    parse = _PARSES.pop(target_path(work_path), None)
    if parse is not None:
        parse.wait()
