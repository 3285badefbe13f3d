"""The segmentation domain materialised on its own: the sweep, the dbt models over the segments
and the report, on marts built beforehand."""

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb

SEGMENTATION = dg.AssetSelection.assets(
    "customer_segments",
    "segment_profiles",
    "segment_history",
    "segment_migration",
    "segment_report",
)


def test_segmentation_assets_alone_segment_every_buyer_and_write_the_report(domain_run):
    result = domain_run.run(SEGMENTATION)
    assert result.success
    done = {
        e.event_specific_data.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }
    assert done == {
        "customer_segments",
        "segment_profiles",
        "segment_history",
        "segment_migration",
        "segment_report",
    }
    assert all(e.passed for e in result.get_asset_check_evaluations())
    con = duckdb.connect(str(domain_run.settings.work_path), read_only=True)
    buyers, segmented, dates, new = con.execute(
        """
        select (select count(*) from customer_rfm), (select count(*) from customer_segments),
               (select count(distinct as_of) from segment_history),
               (select sum(n_customers) from segment_migration
                where kind = 'behavioural' and from_segment = '(new)')
        """
    ).fetchall()[0]
    con.close()
    # One night: everyone is new in the migration table.
    assert buyers == segmented == new and dates == 1
    report = [
        e.event_specific_data.materialization.metadata["path"].value
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key == dg.AssetKey("segment_report")
    ][0]
    assert "Segment sizes" in Path(report).read_text()
    # Nothing is published by a domain's own run.
    assert not domain_run.settings.published_path.exists()


def test_a_night_later_without_new_events_keeps_the_segments_and_reports_their_stability(
    domain_run, tmp_path
):
    from seg_pipeline.defs.resources import PipelineSettings
    from seg_pipeline_tests.defs.conftest import MARTS, DomainRun

    assert domain_run.run(SEGMENTATION).success
    con = duckdb.connect(str(domain_run.settings.work_path), read_only=True)
    as_of = con.execute("select any_value(as_of) from customer_rfm").fetchall()[0][0]
    before = dict(con.execute("select customer_id, segment_id from customer_segments").fetchall())
    con.close()
    later = as_of + dt.timedelta(days=1)
    tomorrow = DomainRun(
        PipelineSettings(**{**domain_run.settings.model_dump(), "as_of": later.isoformat()}),
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert tomorrow.run(dg.AssetSelection.assets(*MARTS).upstream()).success
    result = tomorrow.run(SEGMENTATION)
    assert result.success
    metadata = {
        e.event_specific_data.materialization.asset_key.to_user_string(): (
            e.event_specific_data.materialization.metadata
        )
        for e in result.get_asset_materialization_events()
    }
    meta = metadata["customer_segments"]
    assert meta["refit"].value is False
    assert meta["decision"].value.startswith(f"kept the segments fitted on {as_of}, 1 days ago")
    con = duckdb.connect(str(domain_run.settings.work_path), read_only=True)
    after = dict(con.execute("select customer_id, segment_id from customer_segments").fetchall())
    con.close()
    # Nobody bought: each customer keeps the segment unless a day's recency crosses a boundary.
    kept = sum(after[c] == s for c, s in before.items()) / len(before)
    assert meta["quiet_customers_day"].value == len(before)
    assert meta["segment_kept_day"].value == kept >= 0.97
    assert 0 <= meta["rfm_segment_kept_day"].value <= 1
    report = Path(metadata["segment_report"]["path"].value).read_text()
    assert "kept their segment, day over day" in report
