"""The recommendation domain materialised on its own, after the segments it builds on."""

from datetime import timedelta

import dagster as dg
import duckdb
import pandas as pd

from seg_pipeline.lib.ingest.impressions import ingest_impressions
from seg_pipeline.lib.synthetic import generate_impressions

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


def test_impressions_feed_the_feedback_table_and_demote_an_ignored_item(domain_run, tmp_path):
    """After a night's lists, an impressions log credits them; an item shown three times
    without a click leaves that customer's list the next night, and the figures add up."""
    assert domain_run.run(dg.AssetSelection.assets("customer_segments")).success
    assert domain_run.run(RECOMMENDATIONS).success
    work = str(domain_run.settings.work_path)
    con = duckdb.connect(work)
    lists = con.execute("select customer_id, item_id, rank from customer_recommendations").df()
    as_of = con.execute("select as_of from ingest_manifest").fetchall()[0][0]
    start = str(as_of - timedelta(days=3))
    shown = generate_impressions(lists, start, days=3, seed=1)
    victim = lists[lists["rank"] == 1].iloc[0]
    ignored = pd.DataFrame(
        {
            "customer_id": victim.customer_id,
            "item_id": victim.item_id,
            "shown_at": [f"{start} 0{h}:00" for h in (7, 8, 9)],
            "clicked": False,
            "purchased": False,
        }
    )
    mine = (shown["customer_id"] == victim.customer_id) & (shown["item_id"] == victim.item_id)
    log = tmp_path / "impressions.csv"
    shown[~mine].astype(str).to_csv(log, index=False)
    ignored.astype(str).to_csv(log, mode="a", header=False, index=False)
    with open(log, "a") as f:
        f.write(f"{victim.customer_id},,{start},0,0\n")  # no item: quarantined
    result = ingest_impressions(con, log, run_id="test")
    con.close()
    assert result.rows_read == result.rows_used + result.rows_quarantined
    assert result.reasons == {"missing_item_id": 1}

    assert domain_run.run(RECOMMENDATIONS).success
    con = duckdb.connect(work, read_only=True)
    still_listed = con.execute(
        "select count(*) from customer_recommendations where customer_id = $c and item_id = $i",
        {"c": victim.customer_id, "i": victim.item_id},
    ).fetchall()[0][0]
    totals = con.execute(
        "select sum(impressions), sum(clicks), sum(purchases), count(*) filter "
        "(where model = '(not recommended)') from recommendation_feedback"
    ).fetchall()[0]
    raw = con.execute(
        "select count(*), count(*) filter (where clicked), count(*) filter (where purchased) "
        "from raw_impressions"
    ).fetchall()[0]
    by_rank = dict(
        con.execute(
            "select rank, sum(impressions) from recommendation_feedback group by 1"
        ).fetchall()
    )
    con.close()
    assert still_listed == 0
    assert tuple(totals[:3]) == raw and raw[0] == result.rows_used
    assert totals[3] == 0  # every impression was of a listed item, credited to its rank
    assert set(by_rank) == {1, 2, 3}
