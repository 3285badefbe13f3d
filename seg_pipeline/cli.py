"""The ``seg-pipeline`` command: the nightly job in-process, with progress and one-line errors."""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
import time
import uuid
import warnings
from pathlib import Path

from seg_pipeline.defs.dbt.invocation import engine_target, start_parse, wait_for_parse
from seg_pipeline.lib.paths import DEFAULT_DATABASE, work_database_for
from seg_pipeline.lib.run_lock import RunInProgress, database_lock


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg-pipeline",
        description="Customer segmentation and recommendations: runs the whole nightly job.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--database",
            default=os.environ.get("DUCKDB_DATABASE") or str(DEFAULT_DATABASE),
            help="published DuckDB file (default: $DUCKDB_DATABASE or data/seg_pipeline.duckdb)",
        )
        p.add_argument(
            "--as-of",
            default=os.environ.get("SEG_AS_OF") or None,
            help="YYYY-MM-DD that recency is measured from (default: day after the last event)",
        )
        p.add_argument("--quiet", action="store_true", help="print only the final line")
        p.add_argument(
            "--engine",
            default=os.environ.get("SEG_ENGINE") or "duckdb",
            choices=["duckdb", "spark"],
            help="where the SQL half of the night runs and the tables are published: duckdb "
            "(default: $SEG_ENGINE or duckdb) or spark (the Spark Connect endpoint in "
            "$SPARK_REMOTE)",
        )
        p.add_argument(
            "--wait",
            type=float,
            default=float(os.environ.get("SEG_LOCK_WAIT_SECONDS") or 0),
            metavar="SECONDS",
            help="if another run is working on the database, wait this long for it "
            "(default: $SEG_LOCK_WAIT_SECONDS or 0, fail at once)",
        )
        p.add_argument(
            "--optout",
            default=os.environ.get("SEG_OPTOUT_PATH") or None,
            help="file of customer ids who get no recommendations",
        )
        p.add_argument(
            "--impressions",
            default=os.environ.get("SEG_IMPRESSIONS_PATH") or None,
            help="optional log of shown recommendations (customer_id, item_id, shown_at, "
            "clicked, purchased): feeds recommendation_feedback and demotes ignored items",
        )

    demo = sub.add_parser("demo", help="generate the seeded synthetic shop if missing, then run")
    common(demo)
    run = sub.add_parser("run", help="run on your own events")
    run.add_argument("--events", required=True, help="CSV, .gz CSV or Parquet file, or a glob")
    run.add_argument("--format", default="canonical", choices=["canonical", "online_retail"])
    run.add_argument("--items", default=None, help="optional items file")
    common(run)
    docs = sub.add_parser(
        "docs", help="build the dbt docs site of every model and published column (one HTML file)"
    )
    docs.add_argument(
        "--database", default=os.environ.get("DUCKDB_DATABASE") or str(DEFAULT_DATABASE)
    )
    forget = sub.add_parser("forget", help="erase customers everywhere (GDPR article 17)")
    forget.add_argument(
        "--customer",
        action="append",
        required=True,
        help="customer id to erase; repeat for several",
    )
    forget.add_argument(
        "--database", default=os.environ.get("DUCKDB_DATABASE") or str(DEFAULT_DATABASE)
    )
    forget.add_argument(
        "--engine",
        default=os.environ.get("SEG_ENGINE") or "duckdb",
        choices=["duckdb", "spark"],
        help="also erase them from the Spark catalog's working and published tables (spark)",
    )
    server = sub.add_parser(
        "spark-server", help="start or stop a local Spark Connect server (the Spark engine)"
    )
    server.add_argument("action", choices=["start", "stop"])
    server.add_argument(
        "--dir",
        default=str(DEFAULT_DATABASE.with_name("spark")),
        help="folder of its catalog, warehouse and logs (default: data/spark)",
    )
    server.add_argument("--port", type=int, default=15002)
    server.add_argument(
        "--memory", default="6g", help="the server's heap (driver and local executors)"
    )
    server.add_argument(
        "--conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a further Spark setting (repeatable), e.g. spark.sql.codegen.wholeStage=false "
        "for the small tables of a test suite",
    )
    return parser


def spark_server(
    action: str, folder: str, port: int, memory: str, conf: list[str] | None = None
) -> int:
    """Start or stop a local Spark Connect server; print the SPARK_REMOTE to use."""
    from seg_pipeline.lib.spark.server import start_server, stop_server

    settings = dict(item.split("=", 1) for item in conf or [] if "=" in item)
    if len(settings) != len(conf or []):
        print("seg-pipeline: error: --conf takes KEY=VALUE", file=sys.stderr)
        return 2
    try:
        if action == "stop":
            stop_server(Path(folder))
            print("seg-pipeline: Spark Connect server stopped", file=sys.stderr)
            return 0
        remote = start_server(Path(folder), port=port, driver_memory=memory, conf=settings)
    except RuntimeError as exc:
        print(f"seg-pipeline: error: {exc}", file=sys.stderr)
        return 1
    print(f"export SPARK_REMOTE={remote}")
    print(
        f"seg-pipeline: Spark Connect server listening at {remote} (catalog and warehouse in "
        f"{folder}); run with --engine spark",
        file=sys.stderr,
    )
    return 0


class _Progress(logging.Handler):
    """Prints one line when a step starts, ends or fails, and for each failed check."""

    def __init__(self, stream=sys.stderr) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if event is None:
            return
        kind = event.event_type_value
        step = event.step_key or ""
        if kind == "STEP_START":
            self.started[step] = time.perf_counter()
            print(f"  … {step}", file=self.stream, flush=True)
        elif kind == "STEP_SUCCESS":
            took = time.perf_counter() - self.started.get(step, time.perf_counter())
            print(f"  ✓ {step} ({took:.1f} s)", file=self.stream, flush=True)
        elif kind == "STEP_FAILURE":
            print(f"  ✗ {step} failed", file=self.stream, flush=True)
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed:
                print(
                    f"  ! check {data.check_name} on {data.asset_key.to_user_string()} "
                    f"failed ({data.severity.value})",
                    file=self.stream,
                    flush=True,
                )


def _failure_line(result) -> str:
    """The most useful single line about why a run failed."""
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed and data.severity.value == "ERROR":
                return (
                    f"check '{data.check_name}' on asset '{data.asset_key.to_user_string()}' "
                    f"failed: {dict(data.metadata or {}) and _meta(data.metadata)}"
                )
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            cause = error
            while cause is not None and cause.cause is not None and "Failure" not in cause.cls_name:
                cause = cause.cause
            message = (cause or error).message.strip().splitlines()[0]
            message = message.removeprefix("dagster._core.definitions.events.Failure: ")
            return f"step '{event.step_key}' failed: {message}"
    return "the run failed (see the Dagster logs)"


def _meta(metadata) -> str:
    return ", ".join(f"{k}={getattr(v, 'value', v)}" for k, v in metadata.items())


@contextlib.contextmanager
def _imports_without_gc():
    """Import the pipeline with the cyclic garbage collector paused, then freeze what exists.

    Importing Dagster, dbt's adapter, MLflow and scikit-learn allocates hundreds of thousands of
    long-lived objects, and the collector kept rescanning them during the import. ``gc.freeze``
    then moves them out of every later collection, including the one at interpreter exit. Only
    the first import in a process does this; a process that already imported the pipeline (the
    tests) is left as it is (figures: bench/RESULTS.md).
    """
    if "seg_pipeline.definitions" in sys.modules:
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def run_pipeline(
    *,
    events: str | None,
    fmt: str = "canonical",
    items: str | None = None,
    as_of: str | None = None,
    database: str = str(DEFAULT_DATABASE),
    quiet: bool = False,
    tracking_uri: str | None = None,
    optout: str | None = None,
    impressions: str | None = None,
    wait: float = 0,
    started: float | None = None,
    engine: str = "duckdb",
) -> int:
    """Run ``nightly_job`` in this process and return the exit code (0 on full success).

    The database's run lock is taken first (``lib/run_lock.py``): a second run on the same
    database fails at once with a line naming the first, or waits ``wait`` seconds for it.
    """
    started = time.perf_counter() if started is None else started
    run_id = str(uuid.uuid4())
    try:
        with database_lock(Path(database), run_id, wait_seconds=wait):
            return _run_locked(
                run_id=run_id,
                started=started,
                events=events,
                fmt=fmt,
                items=items,
                as_of=as_of,
                database=database,
                quiet=quiet,
                tracking_uri=tracking_uri,
                optout=optout,
                impressions=impressions,
                engine=engine,
            )
    except RunInProgress as exc:
        print(f"seg-pipeline: error: {exc}", file=sys.stderr)
        return 1


def _dagster_instance(dg):
    """The persistent instance under DAGSTER_HOME (created if the folder is missing), else an
    ephemeral one; its start-up warnings go to the run log, not to the progress lines."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    Path(home).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def _run_locked(
    *,
    run_id,
    started,
    events,
    fmt,
    items,
    as_of,
    database,
    quiet,
    tracking_uri,
    optout,
    impressions,
    engine,
) -> int:
    """``run_pipeline`` once the database's run lock is held."""
    if not quiet:
        print(
            "seg-pipeline: loading definitions (dbt manifest, models)…", file=sys.stderr, flush=True
        )
    # The run id is chosen here so that dbt can parse the project for it while the pipeline is
    # imported on the other core; the dbt step waits for that parse (see start_parse).
    work_schema = os.environ.get("SEG_SPARK_WORK_SCHEMA") or "seg_pipeline_work"
    start_parse(
        work_database_for(Path(database).resolve()), run_id, *engine_target(engine, work_schema)
    )
    with _imports_without_gc():
        import dagster as dg

        from seg_pipeline.definitions import build_definitions
        from seg_pipeline.defs.engine import engine_from_env
        from seg_pipeline.defs.resources import PipelineSettings
    settings = PipelineSettings(
        events_path=events,
        events_format=fmt,
        items_path=items,
        as_of=as_of,
        database=str(Path(database).resolve()),
        optout_path=optout,
        impressions_path=impressions,
        pseudonym_key=os.environ.get("SEG_PSEUDONYM_KEY") or None,
    )
    progress = _Progress()
    # dbt and the libraries print a lot; that, and every Dagster event, goes to a log file.
    log_path = settings.published_path.with_name(settings.published_path.stem + "_last_run.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")

    @dg.logger
    def progress_logger(_init_context) -> logging.Logger:
        logger = logging.Logger("seg_pipeline.progress", level=logging.DEBUG)
        # A logger without handlers would fall back to printing warnings and tracebacks.
        logger.addHandler(logging.NullHandler() if quiet else progress)
        details = logging.FileHandler(log_path)
        details.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(details)
        return logger

    defs = build_definitions(
        settings,
        tracking_uri,
        loggers={"progress": progress_logger},
        engine=engine_from_env({**os.environ, "SEG_ENGINE": engine}),
    )
    job = defs.resolve_job_def("nightly_job")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with (
        open(log_path, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        instance = _dagster_instance(dg)
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_config={"loggers": {"progress": {}}},
            run_id=run_id,
        )
    wait_for_parse(settings.work_path)  # a run that stopped before the dbt step
    took = time.perf_counter() - started
    if result.success:
        from seg_pipeline.defs.resources import tracking_from
        from seg_pipeline.lib.run_summary import next_steps, summary_lines

        if quiet:
            print(f"seg-pipeline: done in {took:.0f} s", file=sys.stderr)
            return 0
        where = None
        if engine == "spark":
            schema = os.environ.get("SEG_SPARK_SCHEMA") or "seg_pipeline"
            where = (
                f"tables: Spark schema {schema} at {os.environ.get('SPARK_REMOTE')} "
                f"(spark.table('{schema}.customer_rfm'), or any Spark SQL client)"
            )
        lines = summary_lines(
            settings.work_path, settings.published_path, result.run_id, published_where=where
        )
        uri = tracking_from(tracking_uri).tracking_uri
        print(
            f"seg-pipeline: done in {took:.0f} s (the whole command); summary:",
            *(f"  {line}" for line in lines),
            *(f"  {line}" for line in next_steps(uri)),
            sep="\n",
            file=sys.stderr,
        )
        return 0
    print(f"seg-pipeline: error: {_failure_line(result)} (details: {log_path})", file=sys.stderr)
    return 1


def build_docs(database: str) -> int:
    """``dbt docs generate --static`` against the work database of ``database``; prints the path
    of the single-file site (descriptions, columns, tests, lineage and exposures)."""
    import subprocess

    from seg_pipeline.defs.dbt.invocation import dbt_command, dbt_vars, target_path
    from seg_pipeline.lib.paths import DBT_PROJECT_DIR

    work = work_database_for(Path(database).resolve())
    if not work.exists():
        print(
            f"seg-pipeline: error: no tables yet at {database}: run `seg-pipeline demo` or "
            "`seg-pipeline run` first",
            file=sys.stderr,
        )
        return 1
    target = target_path(work)
    try:
        with database_lock(Path(database), "docs"):
            proc = subprocess.run(
                dbt_command(target, "docs", "generate", "--static", "--vars", dbt_vars(work)),
                cwd=DBT_PROJECT_DIR,
                capture_output=True,
                text=True,
            )
    except RunInProgress as exc:
        print(f"seg-pipeline: error: {exc}", file=sys.stderr)
        return 1
    site = target / "static_index.html"
    if proc.returncode != 0 or not site.exists():
        last = (proc.stdout.strip().splitlines() or ["dbt docs generate failed"])[-1]
        print(f"seg-pipeline: error: {last}", file=sys.stderr)
        return 1
    print(f"seg-pipeline: docs site written to {site} (open it in a browser)", file=sys.stderr)
    return 0


def forget(customer_ids: list[str], database: str, engine: str = "duckdb") -> int:
    """Erase customers from the working and published databases (and, on the Spark engine,
    the Spark catalog's tables); return the exit code."""
    import duckdb

    from seg_pipeline.defs.resources import PipelineSettings, tracking_from
    from seg_pipeline.lib.privacy import forget_customers

    settings = PipelineSettings(
        database=str(Path(database).resolve()),
        pseudonym_key=os.environ.get("SEG_PSEUDONYM_KEY") or None,
    )
    settings.work_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(settings.work_path))
    except duckdb.IOException:
        print(
            "seg-pipeline: error: a run is writing the database right now; retry when it ends",
            file=sys.stderr,
        )
        return 1
    try:
        report = forget_customers(
            con,
            customer_ids,
            settings.key(),
            published=settings.published_path,
            artifact_root=tracking_from(None).artifact_root(),
        )
    finally:
        con.close()
    if engine == "spark":
        import dagster as dg

        from seg_pipeline.defs.engine import engine_from_env
        from seg_pipeline.lib.spark.privacy import forget_in_spark

        sql_engine = engine_from_env({**os.environ, "SEG_ENGINE": "spark"})
        try:
            report["deleted"].update(
                forget_in_spark(sql_engine.session(), customer_ids, sql_engine.schemas())
            )
        except dg.Failure as exc:
            print(f"seg-pipeline: error: {exc.description}", file=sys.stderr)
            return 1
        finally:
            sql_engine.teardown_after_execution(None)
    rows = sum(report["deleted"].values())
    print(
        f"seg-pipeline: erased {len(set(customer_ids))} customer(s): {rows} rows deleted from "
        f"{len(report['deleted'])} tables; published "
        f"{'Spark tables rewritten' if engine == 'spark' else 'file rebuilt'}; "
        "future ingests drop them",
        file=sys.stderr,
    )
    if report["artifacts_mentioning"]:
        print(
            "seg-pipeline: error: MLflow artefacts still mention them: "
            + ", ".join(report["artifacts_mentioning"][:3]),
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = _parser().parse_args(argv)
    if args.command == "forget":
        return forget(args.customer, args.database, args.engine)
    if args.command == "docs":
        return build_docs(args.database)
    if args.command == "spark-server":
        return spark_server(args.action, args.dir, args.port, args.memory, args.conf)
    if args.command == "demo":
        return run_pipeline(
            events=None,
            as_of=args.as_of,
            database=args.database,
            quiet=args.quiet,
            optout=args.optout,
            impressions=args.impressions,
            wait=args.wait,
            started=started,
            engine=args.engine,
        )
    return run_pipeline(
        events=args.events,
        fmt=args.format,
        items=args.items,
        as_of=args.as_of,
        database=args.database,
        quiet=args.quiet,
        optout=args.optout,
        impressions=args.impressions,
        wait=args.wait,
        started=started,
        engine=args.engine,
    )


if __name__ == "__main__":
    sys.exit(main())
