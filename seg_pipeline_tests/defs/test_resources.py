"""The MLflow resource: its background warm-up, and runs logged after it."""

from types import SimpleNamespace

import mlflow
import pytest

from seg_pipeline.defs.resources import MLflowTracking

# start_run reads only these two attributes of Dagster's execution context.
CONTEXT = SimpleNamespace(
    run_id="dagster-run", op_execution_context=SimpleNamespace(op=SimpleNamespace(name="an_asset"))
)


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
