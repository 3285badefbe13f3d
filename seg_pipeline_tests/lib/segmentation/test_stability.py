"""Membership stability of quiet customers, on a hand-made history whose answer is known."""

import datetime as dt

import pandas as pd

from seg_pipeline.lib.segmentation.stability import membership_stability

AS_OF = dt.date(2025, 6, 30)


def test_only_quiet_customers_count_and_each_lag_compares_with_its_own_snapshot():
    today = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "segment_id": ["S1", "S1", "S2", "S2", "S3"],
            "rfm_segment": ["Champions"] * 4 + ["Lost"],
            # c bought yesterday (not quiet for either lag); e bought three days ago.
            "recency_days": [40, 40, 1, 40, 3],
        }
    )
    history = pd.DataFrame(
        {
            "as_of": [AS_OF - dt.timedelta(days=1)] * 5 + [AS_OF - dt.timedelta(days=7)] * 4,
            "customer_id": ["a", "b", "c", "d", "e", "a", "b", "d", "e"],
            "segment_id": ["S1", "S2", "S9", "S2", "S3", "S1", "S1", "S1", "S3"],
            "rfm_segment": ["Champions"] * 4
            + ["Lost"]
            + ["Champions", "Lost", "Champions", "Lost"],
        }
    )
    out = membership_stability(today, history, AS_OF)
    # Day: a, b, d, e are quiet; b moved.  Week: a, b, d are quiet (e bought 3 days ago); d moved.
    assert out["day"] == {"customers": 4, "segment": 0.75, "rfm_segment": 1.0}
    assert out["week"]["customers"] == 3
    assert out["week"]["segment"] == 2 / 3 and out["week"]["rfm_segment"] == 2 / 3


def test_no_snapshot_at_a_lag_gives_no_figure_for_it():
    today = pd.DataFrame(
        {"customer_id": ["a"], "segment_id": ["S1"], "rfm_segment": ["Lost"], "recency_days": [50]}
    )
    history = pd.DataFrame(
        {
            "as_of": [AS_OF - dt.timedelta(days=7)],
            "customer_id": ["a"],
            "segment_id": ["S1"],
            "rfm_segment": ["Lost"],
        }
    )
    assert list(membership_stability(today, history, AS_OF)) == ["week"]
    assert membership_stability(today, history.iloc[:0], AS_OF) == {}
