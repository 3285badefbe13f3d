"""The SQL engine of a run: DuckDB (the default, in this process) or Spark (over Spark Connect).

The assets are the same on both. On DuckDB every table is in the working file. On Spark the
ingest's tables, the dbt models and the published tables live in the Spark catalog; the Python
models read their inputs on the driver. Each asset therefore says which tables it shares with
the SQL engine (``share``) and which of the engine's tables it needs on the driver
(``collect``); on DuckDB both do nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from seg_pipeline.defs.dbt.invocation import engine_target

ENGINES = ("duckdb", "spark")
WORK_SCHEMA = "seg_pipeline_work"


class SqlEngine(dg.ConfigurableResource):
    """Which engine runs the SQL half of the night, and how to reach Spark when it is Spark."""

    engine: str = Field(default="duckdb", description="duckdb (default) or spark.")
    spark_remote: str | None = Field(
        default=None,
        description="Spark Connect endpoint (sc://host:15002); default: $SPARK_REMOTE.",
    )
    work_schema: str = Field(
        default=WORK_SCHEMA,
        description="Spark schema of the ingest's tables, the dbt models and the Python outputs.",
    )
    published_schema: str = Field(
        default="seg_pipeline",
        description="Spark schema where consumers read the published tables (views).",
    )
    staging_dir: str | None = Field(
        default=None,
        description="Folder both the driver and Spark's executors reach, through which tables "
        "cross between them (object storage on a cluster); default: spark_staging/ beside the "
        "database.",
    )
    _session: object | None = PrivateAttr(default=None)

    @property
    def is_spark(self) -> bool:
        if self.engine not in ENGINES:
            raise dg.Failure(f"unknown engine '{self.engine}'; use one of {', '.join(ENGINES)}")
        return self.engine == "spark"

    def remote(self) -> str:
        remote = self.spark_remote or os.environ.get("SPARK_REMOTE")
        if not remote:
            raise dg.Failure(
                "the Spark engine needs a Spark Connect endpoint: set SPARK_REMOTE "
                "(sc://host:15002) or start a local server with `seg-pipeline spark-server start`"
            )
        return remote

    def session(self):
        """The run's Spark Connect session (opened on first use)."""
        if self._session is None:
            try:
                from pyspark.sql import SparkSession
            except ImportError:
                raise dg.Failure(
                    'the Spark engine needs the spark extra: pip install -e ".[spark]"'
                ) from None
            remote = self.remote()
            # dbt runs in a subprocess and finds the same endpoint through the environment.
            os.environ["SPARK_REMOTE"] = remote
            try:
                # A session of its own (not the process's default), so that stopping it at
                # teardown leaves any other session of the process open.
                self._session = SparkSession.builder.remote(remote).create()
                # Timestamps are UTC throughout the pipeline, whatever the cluster's default.
                self._session.conf.set("spark.sql.session.timeZone", "UTC")
            except Exception as exc:
                raise dg.Failure(f"cannot reach Spark Connect at {remote}: {exc}") from exc
        return self._session

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # dbt (a subprocess) finds the endpoint in the environment. A missing one is reported
        # by the first step that needs Spark, with the step's name.
        remote = self.spark_remote or os.environ.get("SPARK_REMOTE")
        if self.is_spark and remote:
            os.environ["SPARK_REMOTE"] = remote

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        # A Connect client that fitted models hangs at exit unless the session is stopped.
        if self._session is not None:
            self._session.stop()
            self._session = None

    def schemas(self) -> list[str]:
        """The Spark schemas this pipeline writes: working and published."""
        return [self.work_schema, self.published_schema]

    def staging(self, database: Path) -> Path:
        folder = Path(self.staging_dir or Path(database).with_name("spark_staging")).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def dbt_args(self) -> list[str]:
        """The dbt target of this engine."""
        return engine_target(self.engine, self.work_schema)[0]

    def dbt_vars(self) -> dict:
        return engine_target(self.engine, self.work_schema)[1]

    def share(self, con, tables: list[str], database: Path) -> list[str]:
        """Copy these tables of the driver's DuckDB file into the engine's catalog."""
        if not self.is_spark:
            return []
        from seg_pipeline.lib.spark.tables import to_spark

        return to_spark(con, self.session(), tables, self.work_schema, self.staging(database))

    def collect(self, con, tables: list[str], database: Path) -> dict[str, int]:
        """Copy these tables of the engine's catalog into the driver's DuckDB file."""
        if not self.is_spark:
            return {}
        from seg_pipeline.lib.spark.tables import from_spark

        return from_spark(con, self.session(), tables, self.work_schema, self.staging(database))


def engine_from_env(environ: dict | None = None) -> SqlEngine:
    """The engine named by SEG_ENGINE (default duckdb) and SPARK_REMOTE."""
    env = os.environ if environ is None else environ
    return SqlEngine(
        engine=env.get("SEG_ENGINE") or "duckdb",
        spark_remote=env.get("SPARK_REMOTE") or None,
        work_schema=env.get("SEG_SPARK_WORK_SCHEMA") or WORK_SCHEMA,
        published_schema=env.get("SEG_SPARK_SCHEMA") or "seg_pipeline",
        staging_dir=env.get("SEG_SPARK_STAGING") or None,
    )
