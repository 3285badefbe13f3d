"""Nights between refits: only changed customers are re-scored, with the lists a full re-score
gives."""

import json
import shutil

import duckdb
import pandas as pd
import pytest

from seg_pipeline.definitions import build_definitions
from seg_pipeline.defs.dbt.assets import dbt_project
from seg_pipeline.defs.dbt.invocation import dbt_executable
from seg_pipeline.defs.dbt.resources import LocalDbtCliResource
from seg_pipeline.defs.resources import PipelineSettings


def _night(root, events_glob, items, tracking, run_config=None):
    settings = PipelineSettings(
        events_path=events_glob,
        items_path=str(items),
        database=str(root / "published.duckdb"),
        demo_dir=str(root / "demo"),
    )
    result = (
        build_definitions(settings, tracking)
        .resolve_job_def("nightly_job")
        .execute_in_process(run_config=run_config or {}, raise_on_error=False)
    )
    assert result.success, [
        e.check_name for e in result.get_asset_check_evaluations() if not e.passed
    ]
    meta = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    work = duckdb.connect(str(root / "published_work.duckdb"), read_only=True)
    lists = work.execute(
        "select * exclude (run_id) from customer_recommendations order by customer_id, rank"
    ).fetchdf()
    work.close()
    return meta, lists


def _daily(database):
    con = duckdb.connect(str(database), read_only=True)
    frame = con.execute(
        "select * from int_customer_item_daily order by customer_id, item_id, event_date"
    ).fetchdf()
    con.close()
    return frame


def _config(**extra):
    # ALS competes alone with the baselines: on this small shop item-KNN wins otherwise, and
    # only an ALS champion is kept between refits.
    return {"ops": {"recommendations": {"config": {"families": ["als"], **extra}}}}


@pytest.fixture(scope="module")
def nights(tmp_path_factory, small_shop_files):
    """Night 1 refits on all days but the last two; night 2 adds them and runs twice on copies
    of night 1's files: once re-scoring changed customers, once re-scoring everyone."""
    root = tmp_path_factory.mktemp("nights")
    events = pd.read_csv(small_shop_files["events"], dtype=str, keep_default_na=False)
    day = events["event_ts"].str[:10]
    days = sorted(day.unique())
    folder = root / "events"
    folder.mkdir()
    events[day < days[-2]].to_csv(folder / "events_0_history.csv", index=False)
    first = root / "first"
    first.mkdir()
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    meta1, lists1 = _night(
        first, str(folder / "*.csv"), small_shop_files["items"], tracking, _config()
    )
    # Tonight's file: two new days and a late purchase from the middle of the history.
    late = events[(day == days[len(days) // 2]) & (events["event_type"] == "purchase")].head(1)
    new = pd.concat([events[day >= days[-2]], late.assign(order_id="LATE-1")])
    new.to_csv(folder / "events_1_new.csv", index=False)
    out = {"first": (meta1, lists1)}
    for name, rescore_all in (("changed", False), ("everyone", True)):
        copy = root / name
        shutil.copytree(first, copy)
        config = _config(rescore_all=rescore_all)
        out[name] = _night(copy, str(folder / "*.csv"), small_shop_files["items"], tracking, config)
    out["new_events"] = new
    out["late_day"] = days[len(days) // 2]
    # The incremental daily table of the night-2 database, and the same table fully rebuilt.
    rebuilt = root / "rebuilt"
    shutil.copytree(root / "changed", rebuilt)
    work = str(rebuilt / "published_work.duckdb")
    dbt = LocalDbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
    args = ["run", "--select", "int_customer_item_daily", "--full-refresh"]
    vars_ = json.dumps({"work_database": work, "run_id": "rebuild"})
    assert dbt.cli([*args, "--vars", vars_], target_path=root / "target").wait().is_successful()
    # What dbt ran on night 2 (dbt writes each model's executed SQL under target/run).
    out["daily_sql"] = next(
        (root / "changed" / "published_work_dbt_target" / "run").rglob(
            "int_customer_item_daily.sql"
        )
    ).read_text()
    out["daily"] = {
        name: _daily(folder / "published_work.duckdb")
        for name, folder in (("incremental", root / "changed"), ("rebuilt", rebuilt))
    }
    return out


def test_the_first_night_refits_and_keeps_an_als_model(nights):
    meta, lists = nights["first"]
    recs = meta["customer_recommendations"]
    assert recs["refit"] is True and recs["refit_reason"] == "no kept model"
    assert recs["champion"].startswith("als(")
    assert len(lists) == recs["dagster/row_count"] > 0


def test_a_night_between_refits_rescores_only_changed_customers(nights):
    meta, lists = nights["changed"]
    recs = meta["customer_recommendations"]
    first = nights["first"][0]["customer_recommendations"]
    assert recs["refit"] is False
    assert recs["model_run_id"] == first["model_run_id"]
    assert recs["customers_kept"] > 0
    assert recs["customers_rescored"] + recs["customers_kept"] == recs["customers"]
    # Customers with new events whose matrix row did not change (a neutral rating of 3, say)
    # keep their list too, so the exact count is not the number of customers with new events.
    assert 0 < recs["customers_rescored"] < recs["customers"]
    assert meta["recommendation_metrics"]["evaluated_tonight"] is False


def test_rescoring_changed_customers_equals_rescoring_everyone(nights):
    changed = nights["changed"][1]
    everyone = nights["everyone"][1]
    assert nights["everyone"][0]["customer_recommendations"]["customers_kept"] == 0
    pd.testing.assert_frame_equal(changed, everyone)


def test_only_customers_with_new_events_get_a_new_list(nights):
    before = nights["first"][1].set_index(["customer_id", "rank"])
    after = nights["changed"][1].set_index(["customer_id", "rank"])
    columns = ["item_id", "score", "reason", "because_item_id"]
    joined = before[columns].join(after[columns], how="outer", rsuffix="_after")
    moved = joined[
        (joined["item_id"] != joined["item_id_after"]) | (joined["score"] != joined["score_after"])
    ]
    moved_customers = set(moved.index.get_level_values("customer_id"))
    new_events = set(nights["new_events"]["customer_id"])
    assert moved_customers  # the new days changed some lists
    # A list moves only for a customer with new events, or one with no purchase (popularity).
    bought = set(nights["new_events"].query("event_type in ('purchase', '')")["customer_id"])
    for customer in moved_customers - new_events:
        rows = after.loc[customer]
        assert (rows["model"] == "segment_popularity").all(), customer
    assert moved_customers & bought


def test_the_incremental_daily_table_equals_a_full_rebuild(nights):
    incremental, rebuilt = nights["daily"]["incremental"], nights["daily"]["rebuilt"]
    pd.testing.assert_frame_equal(incremental, rebuilt)
    # Night 2 recomputed changed days into the kept table instead of rebuilding it.
    assert "delete from" in nights["daily_sql"] and "insert into" in nights["daily_sql"]
    late = incremental[
        (incremental["event_date"] == pd.Timestamp(nights["late_day"]))
        & (incremental["n_orders"] > 0)
    ]
    assert len(late) > 0
