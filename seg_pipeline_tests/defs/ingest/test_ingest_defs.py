import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from seg_pipeline.defs.engine import SqlEngine
from seg_pipeline.defs.ingest.assets import ingested_events
from seg_pipeline.defs.ingest.checks import rows_reconcile
from seg_pipeline.defs.resources import PipelineSettings


@pytest.fixture
def resources(tmp_path, write_csv):
    events = write_csv(
        "customer_id,item_id,event_ts,quantity\n"
        "c1,i1,2025-01-01,1\nc1,i2,2025-01-02,0\nc2,i1,2025-01-03,2\n"
    )
    settings = PipelineSettings(events_path=str(events), database=str(tmp_path / "pub.duckdb"))
    return {
        "settings": settings,
        "duckdb": DuckDBResource(database=str(settings.work_path)),
        "engine": SqlEngine(),
    }


def test_ingest_asset_reports_counts_and_the_check_recounts(resources):
    result = dg.materialize([ingested_events], resources=resources)
    assert result.success
    meta = result.asset_materializations_for_node("ingested_events")[0].metadata
    assert meta["rows_read"].value == 3
    assert meta["rows_used"].value == 2
    assert meta["rows_quarantined"].value == 1
    assert meta["as_of"].value == "2025-01-04"

    check = rows_reconcile(duckdb=resources["duckdb"], engine=resources["engine"])
    assert check.passed
    with resources["duckdb"].get_connection() as con:
        con.execute("delete from raw_events where customer_id = 'c2'")
    assert not rows_reconcile(duckdb=resources["duckdb"], engine=resources["engine"]).passed


def test_ingest_asset_fails_with_the_reason(resources, tmp_path):
    settings = PipelineSettings(
        events_path=str(tmp_path / "absent.csv"), database=resources["settings"].database
    )
    result = dg.materialize(
        [ingested_events], resources={**resources, "settings": settings}, raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "does not exist" in failure.step_failure_data.error.cause.message


def test_demo_shop_is_generated_when_no_events_are_given(tmp_path):
    settings = PipelineSettings(
        database=str(tmp_path / "pub.duckdb"), demo_dir=str(tmp_path / "demo")
    )
    resources = {
        "settings": settings,
        "duckdb": DuckDBResource(database=str(settings.work_path)),
        "engine": SqlEngine(),
    }
    result = dg.materialize(
        [ingested_events],
        resources=resources,
        run_config={"ops": {"ingested_events": {"config": {"demo_customers": 200}}}},
    )
    assert result.success
    assert (tmp_path / "demo" / "events.csv").exists()
    assert (tmp_path / "demo" / "items.csv").exists()
