"""The MLflow resource: its warm-up, and runs logged after it."""

import os
from types import SimpleNamespace

import mlflow
import pytest

from seg_pipeline.defs.resources import MLflowTracking

# start_run reads only these two attributes of Dagster's execution context.
CONTEXT = SimpleNamespace(
    run_id="dagster-run", op_execution_context=SimpleNamespace(op=SimpleNamespace(name="an_asset"))
)


@pytest.fixture(autouse=True)
def _tracking_uri_restored():
    """start_run sets MLflow's tracking URI for the process and its environment, which the CLI
    tests' subprocesses inherit: put both back."""
    uri, env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    yield
    mlflow.set_tracking_uri(uri)
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


def test_warm_up_opens_the_store_and_runs_are_logged_after_it(tmp_path):
    store = tmp_path / "tracking" / "mlflow.db"
    tracking = MLflowTracking(tracking_uri=f"sqlite:///{store}")
    tracking.warm_up()
    assert store.exists()  # the store was opened (created, on a new file)
    tracking.warm_up()  # a second warm-up finds it open

    with tracking.start_run(CONTEXT, "warm") as run:
        mlflow.log_metric("m", 1.0)
    logged = mlflow.MlflowClient(tracking.tracking_uri).get_run(run.info.run_id)
    assert logged.data.metrics == {"m": 1.0}
    assert logged.data.tags["dagster.run_id"] == "dagster-run"


def test_a_failed_warm_up_is_quiet_and_the_first_real_call_raises():
    tracking = MLflowTracking(tracking_uri="nosuchscheme://nowhere")
    tracking.warm_up()
    with pytest.raises(Exception, match="nosuchscheme"), tracking.start_run(CONTEXT, "never"):
        pass
