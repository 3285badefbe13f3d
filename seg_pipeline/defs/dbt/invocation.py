"""How the dbt step calls dbt: the executable, the vars and the target folder, in one place.

This module imports nothing heavy, so the CLI can start ``dbt parse`` for tonight's run before
it imports Dagster (see ``start_parse``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from seg_pipeline.lib.paths import DBT_PROJECT_DIR


def dbt_executable() -> str:
    """The dbt installed beside this Python, so an unactivated virtualenv still finds it."""
    beside = Path(sys.executable).parent / "dbt"
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


# The environment variable the models read the run id from (stamped on every mart row).
RUN_ID_ENV = "SEG_RUN_ID"


def dbt_vars(work_path: Path, **overrides) -> str:
    """The ``--vars`` of a run: its working database and any of the project's vars that the
    run's config overrides. The same every night for one database, so that dbt re-reads its
    saved parse; the run id goes in the environment (``run_env``)."""
    return json.dumps({"work_database": str(work_path), **overrides})


def run_env(run_id: str) -> dict[str, str]:
    """The environment of a dbt command for run ``run_id``: this process's, plus the run id.

    When only an environment variable changes, dbt re-parses the few models that read it;
    a changed var would make it parse the whole project again every night.
    """
    return {**os.environ, RUN_ID_ENV: run_id}


@contextmanager
def run_id_in_environ(run_id: str) -> Iterator[None]:
    """This process's environment carries ``run_id`` while dagster-dbt starts dbt (it hands dbt
    a copy of ``os.environ`` and has no parameter for more)."""
    previous = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous


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
    """Start ``dbt parse`` with the exact vars and run id that run ``run_id``'s ``dbt build``
    will pass.

    A database's first night (or one after the project changed) has no saved parse; with one
    saved for the same vars and run id, ``dbt build`` re-reads it instead of parsing. The CLI
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
            dbt_vars(work_path, **(extra_vars or {})),
        ),
        cwd=DBT_PROJECT_DIR,
        env=run_env(run_id),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_parse(work_path: Path) -> None:
    """Wait for a parse this process started for ``work_path`` (``start_parse``), if any."""
    parse = _PARSES.pop(target_path(work_path), None)
    if parse is not None:
        parse.wait()
