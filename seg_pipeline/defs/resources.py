"""Resources shared by every domain: where the data is, the working database and MLflow."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from seg_pipeline.lib.paths import (
    DEFAULT_DATABASE,
    DEMO_DIR,
    default_tracking_uri,
    work_database_for,
)
from seg_pipeline.lib.privacy import load_or_create_key
from seg_pipeline.lib.run_lock import RunInProgress, database_lock


class PipelineSettings(dg.ConfigurableResource):
    """Inputs and outputs of a run: the events, their format, as_of and the database files."""

    events_path: str | None = Field(
        default=None,
        description="CSV, .gz CSV or Parquet file, or a glob. Empty: the embedded synthetic shop.",
    )
    events_format: str = Field(default="canonical", description="canonical or online_retail.")
    items_path: str | None = Field(default=None, description="Optional items file.")
    as_of: str | None = Field(
        default=None, description="YYYY-MM-DD; default: day after the last event."
    )
    database: str = Field(default=str(DEFAULT_DATABASE), description="Published DuckDB file.")
    demo_dir: str = Field(default=str(DEMO_DIR), description="Where the synthetic shop is written.")
    optout_path: str | None = Field(
        default=None,
        description="File of customer ids who opted out of recommendations (CSV with a "
        "customer_id column, or one id per line). Unset: the stored opt-outs stay as they are.",
    )
    impressions_path: str | None = Field(
        default=None,
        description="Optional impressions log (customer_id, item_id, shown_at, clicked, "
        "purchased; CSV, .gz CSV or Parquet, or a glob): feeds recommendation_feedback and "
        "demotes items shown without interaction.",
    )
    pseudonym_key: str | None = Field(
        default=None,
        description="Key for customer-id pseudonyms; default: a random key kept in "
        "data/.pseudonym_key beside the database.",
    )
    lock_wait_seconds: float = Field(
        default=0,
        description="When another run is working on the same database, wait this long for it "
        "before failing with a line that names it (0: fail at once).",
    )
    _lock: ExitStack | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Take the database's run lock for the whole run (``lib/run_lock.py``)."""
        stack = ExitStack()
        try:
            stack.enter_context(
                database_lock(
                    self.published_path,
                    context.run_id or "manual",
                    wait_seconds=self.lock_wait_seconds,
                )
            )
        except RunInProgress as exc:
            raise dg.Failure(str(exc)) from None
        self._lock = stack

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def published_path(self) -> Path:
        return Path(self.database).resolve()

    @property
    def work_path(self) -> Path:
        return work_database_for(self.published_path)

    def key(self) -> str:
        """The pseudonymisation key (created on first use)."""
        return load_or_create_key(self.published_path.parent / ".pseudonym_key", self.pseudonym_key)

    def as_of_date(self) -> date | None:
        if not self.as_of:
            return None
        try:
            return date.fromisoformat(self.as_of)
        except ValueError as exc:
            raise dg.Failure(f"as_of '{self.as_of}' is not a YYYY-MM-DD date") from exc


# MLflow 3 opens an experiment without a kind in its GenAI view (traces); ours are classic model
# training, whose runs table should open first.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_TAGS = {EXPERIMENT_KIND: "custom_model_development"}


class MLflowTracking(dg.ConfigurableResource):
    """Opens one MLflow run per materialisation, tagged with the Dagster run id.

    A small resource over plain ``mlflow`` rather than dagster-mlflow's job hook, which can close
    runs too early. Experiments get an explicit artifact location next to the tracking database so
    artefacts never land in whatever folder the process happened to start in.
    """

    tracking_uri: str = Field(
        default_factory=default_tracking_uri,
        description="MLflow tracking URI (default: SQLite under data/).",
    )
    artifact_dir: str | None = Field(
        default=None, description="Folder for artefacts; default: mlartifacts/ beside the store."
    )

    def artifact_root(self) -> Path:
        """Folder holding this store's artefacts (also scanned after an erasure)."""
        if self.artifact_dir:
            return Path(self.artifact_dir).resolve()
        if self.tracking_uri.startswith("sqlite:///"):
            return (
                Path(self.tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts"
            )
        return Path("data/mlartifacts").resolve()

    def _ensure_store_folder(self) -> None:
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )

    def warm_up(self) -> None:
        """Open this URI's tracking store ahead of the first MLflow run.

        Opening the SQLite store (an SQLAlchemy engine and a schema check) is a one-off cost of
        the first MLflow call in a process. The dbt step calls this while dbt starts in its own
        process, when this one has nothing else to do; MLflow caches the store per URI, so the
        runs reuse it. (Importing skops here too, which ``mlflow.sklearn.log_model`` needs, also
        saved time but raised the 10M benchmark's peak memory, so skops is imported where it is
        used.) A warm-up that fails is ignored: the first real call repeats it and raises the
        error where it belongs.
        """
        try:
            import mlflow

            self._ensure_store_folder()
            mlflow.MlflowClient(self.tracking_uri)
        except Exception:  # see above
            pass

    def preload_model_logging(self) -> None:
        """Import what ``mlflow.sklearn.log_model`` needs on a second thread, and return.

        skops, the safe model format, is slow to import (it lists every scikit-learn type it
        trusts), all in one thread at the end of the segmentation step, when nothing else runs.
        Started at the step's beginning it overlaps loading and preparing the features, which
        leave a core idle. Python's import lock makes ``log_model`` wait for an
        import still in progress; an import that fails here fails again there, with its error.
        (Started in the dbt step instead, the 10M benchmark's peak memory rose.)
        """

        def load() -> None:
            try:
                import mlflow.sklearn  # noqa: F401
                import skops.io  # noqa: F401
            except Exception:  # see above
                pass

        threading.Thread(target=load, name="preload-model-logging", daemon=True).start()

    @contextmanager
    def start_run(
        self,
        context: dg.AssetExecutionContext,
        experiment: str,
        *,
        run_name: str | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[object]:
        """Start (and always end) an MLflow run for this materialisation; yields the run."""
        import mlflow

        self._ensure_store_folder()
        mlflow.set_tracking_uri(self.tracking_uri)
        client = mlflow.MlflowClient(self.tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = (self.artifact_root() / experiment).as_uri()
            experiment_id = client.create_experiment(
                experiment, artifact_location=location, tags=EXPERIMENT_TAGS
            )
        else:
            experiment_id = found.experiment_id
            if found.tags.get(EXPERIMENT_KIND) != EXPERIMENT_TAGS[EXPERIMENT_KIND]:
                client.set_experiment_tag(
                    experiment_id, EXPERIMENT_KIND, EXPERIMENT_TAGS[EXPERIMENT_KIND]
                )
        tags = {
            "dagster.run_id": context.run_id,
            "dagster.asset": context.op_execution_context.op.name,
        }
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name or context.op_execution_context.op.name,
            tags=tags,
            nested=parent_run_id is not None,
            parent_run_id=parent_run_id,
        ) as run:
            yield run

    def log_children(
        self,
        context: dg.AssetExecutionContext,
        parent: object,
        children: list[tuple[str, dict, dict]],
    ) -> None:
        """One finished child run of ``parent`` per ``(name, params, metrics)``.

        Three store calls per child (create, one batch, terminate) on one client, where a fluent
        ``start_run`` per child also looks the experiment and the parent up again.
        """
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        client = MlflowClient(self.tracking_uri)
        info = parent.info
        tags = {
            "mlflow.parentRunId": info.run_id,
            "dagster.run_id": context.run_id,
            "dagster.asset": context.op_execution_context.op.name,
        }
        for name, params, metrics in children:
            run = client.create_run(info.experiment_id, tags=tags, run_name=name)
            now = int(time.time() * 1000)
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                params=[Param(k, str(v)) for k, v in params.items()],
            )
            client.set_terminated(run.info.run_id)


def settings_from_env(environ: os._Environ | dict | None = None) -> PipelineSettings:
    """Build the settings from the contract's environment variables (used by ``dagster dev``)."""
    env = os.environ if environ is None else environ
    return PipelineSettings(
        events_path=env.get("SEG_EVENTS_PATH") or None,
        events_format=env.get("SEG_EVENTS_FORMAT") or "canonical",
        items_path=env.get("SEG_ITEMS_PATH") or None,
        as_of=env.get("SEG_AS_OF") or None,
        database=env.get("DUCKDB_DATABASE") or str(DEFAULT_DATABASE),
        optout_path=env.get("SEG_OPTOUT_PATH") or None,
        impressions_path=env.get("SEG_IMPRESSIONS_PATH") or None,
        pseudonym_key=env.get("SEG_PSEUDONYM_KEY") or None,
        lock_wait_seconds=float(env.get("SEG_LOCK_WAIT_SECONDS") or 0),
    )


def tracking_from(uri: str | None) -> MLflowTracking:
    """The MLflow resource for ``uri``, else MLFLOW_TRACKING_URI, else the local store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    return MLflowTracking(tracking_uri=uri) if uri else MLflowTracking()
