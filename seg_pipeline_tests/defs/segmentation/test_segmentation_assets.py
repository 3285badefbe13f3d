"""The segmentation domain materialised on its own: the sweep, the dbt models over the segments
and the report, on marts built beforehand."""

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
