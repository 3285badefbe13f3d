"""The recommendation domain materialised on its own, after the segments it builds on."""

import dagster as dg
import duckdb

RECOMMENDATIONS = dg.AssetSelection.assets(
    "customer_recommendations",
    "recommendation_metrics",
    "item_similarities",
    "segment_recommendations",
)


def test_recommendation_assets_alone_give_every_buyer_a_list(domain_run):
    assert domain_run.run(dg.AssetSelection.assets("customer_segments")).success
    result = domain_run.run(RECOMMENDATIONS)
    assert result.success
    assert all(
        e.passed for e in result.get_asset_check_evaluations() if e.severity.value == "ERROR"
    )
    con = duckdb.connect(str(domain_run.settings.work_path), read_only=True)
    customers, listed, champions, segments, segment_lists = con.execute(
        """
        select (select count(distinct customer_id) from int_customer_item_daily),
               (select count(distinct customer_id) from customer_recommendations),
               (select count(*) from recommendation_metrics
                where is_champion and segment = 'all'),
               (select count(*) from segment_profiles),
               (select count(distinct segment_id) from segment_recommendations)
        """
    ).fetchall()[0]
    con.close()
    assert customers == listed and champions == 1 and segments == segment_lists
