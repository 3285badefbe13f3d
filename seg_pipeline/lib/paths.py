"""Where the project's files live.

Defaults are anchored at the project root (the folder holding ``dbt_project/``), not at the current
directory, so ``dagster dev``, the CLI and the schedule all find the same database whatever folder
they were started from.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DATA_DIR = PROJECT_ROOT / "data"
DEMO_DIR = DATA_DIR / "demo"
DEFAULT_DATABASE = DATA_DIR / "seg_pipeline.duckdb"


def work_database_for(published: str | Path) -> Path:
    """Return the private working database that sits beside a published database.

    dbt and the Python steps write to the working file; only the publishing step touches the
    published file, which it replaces atomically. Readers of the published file therefore never
    hold the writer's lock and never see a half-built table.
    """
    published = Path(published)
    return published.with_name(f"{published.stem}_work{published.suffix or '.duckdb'}")


def default_tracking_uri(data_dir: Path = DATA_DIR) -> str:
    """Return the default MLflow tracking URI: a SQLite store under ``data/``.

    MLflow 3.17 refuses a plain file store, so SQLite is the local default.
    """
    return f"sqlite:///{(data_dir / 'mlflow.db').resolve()}"
