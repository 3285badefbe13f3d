import dagster as dg
import pytest

from seg_pipeline.definitions import build_definitions, defs
from seg_pipeline.defs.engine import engine_from_env
from seg_pipeline.defs.resources import PipelineSettings
from seg_pipeline.lib.contract import PUBLISHED_TABLES


def test_nightly_job_covers_every_asset():
    job = defs.resolve_job_def("nightly_job")
    all_keys = defs.resolve_asset_graph().get_all_asset_keys()
    in_job = set(job.asset_layer.asset_graph.get_all_asset_keys())
    assert all_keys <= in_job
    assert {dg.AssetKey(t) for t in PUBLISHED_TABLES} <= all_keys
    assert dg.AssetKey("published_database") in all_keys


def test_nightly_schedule_runs_the_job_at_two_utc():
    schedule = defs.resolve_schedule_def("nightly_schedule")
    assert schedule.job_name == "nightly_job"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"


def test_dbt_tests_and_python_checks_are_asset_checks():
    checks = {
        (k.asset_key.to_user_string(), k.name) for k in defs.resolve_asset_graph().asset_check_keys
    }
    assert ("customer_rfm", "unique_customer_rfm_customer_id") in checks
    assert ("raw_events", "rows_reconcile") in checks
    assert ("customer_segments", "one_segment_per_customer") in checks
    assert ("customer_recommendations", "recommendations_respect_rules") in checks


def test_every_asset_has_a_description():
    for node in defs.resolve_asset_graph().asset_nodes:
        assert node.description, f"{node.key.to_user_string()} has no description"


def test_the_engine_comes_from_the_environment_and_reaches_every_step():
    engine = engine_from_env({"SEG_ENGINE": "spark", "SPARK_REMOTE": "sc://spark-host:15002"})
    assert engine.is_spark and engine.remote() == "sc://spark-host:15002"
    assert engine.dbt_args() == ["--target", "spark"]
    assert engine.dbt_vars() == {"spark_work_schema": "seg_pipeline_work"}
    built = build_definitions(PipelineSettings(), engine=engine)
    assert built.resources["engine"].engine == "spark"
    assert not engine_from_env({}).is_spark and engine_from_env({}).dbt_args() == []
    with pytest.raises(dg.Failure, match="unknown engine 'flink'"):
        _ = engine_from_env({"SEG_ENGINE": "flink"}).is_spark
