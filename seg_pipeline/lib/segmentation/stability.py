"""How many customers kept their segment when nothing happened to them.

A marketer's campaign targets a segment for days or weeks; if customers who did nothing move
between segments anyway, the segment measures the model's noise rather than the customers. The
figure that matters is the share of *quiet* customers (no purchase since the earlier snapshot)
who are still in the same segment, beside the same share for the named RFM segments, whose
rules move a quiet customer only when their recency crosses a score boundary.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

LAGS = {"day": 1, "week": 7}


def membership_stability(
    today: pd.DataFrame, history: pd.DataFrame, as_of
) -> dict[str, dict[str, float]]:
    """Shares of quiet customers who kept their segment, per lag with a snapshot.

    Parameters
    ----------
    today : DataFrame
        One row per customer: ``customer_id``, ``segment_id``, ``rfm_segment`` and
        ``recency_days`` (days since the last purchase at ``as_of``).
    history : DataFrame
        Earlier snapshots (``segment_history``): ``as_of``, ``customer_id``, ``segment_id``,
        ``rfm_segment``.
    as_of : date
        Today's as-of date.

    Returns
    -------
    dict
        ``{"day": {...}, "week": {...}}`` for the lags whose snapshot exists, each with
        ``customers`` (quiet customers in both snapshots), ``segment`` and ``rfm_segment``
        (shares of them that kept it).
    """
    if as_of is None or not len(history):
        return {}
    as_of = pd.Timestamp(as_of).date()
    dates = pd.to_datetime(history["as_of"]).dt.date
    out = {}
    for name, lag in LAGS.items():
        earlier = history[dates == as_of - dt.timedelta(days=lag)]
        # No purchase since the earlier snapshot: the last one was before its as-of date.
        quiet = today[today["recency_days"] > lag]
        both = quiet.merge(earlier, on="customer_id", suffixes=("", "_before"))
        if not len(both):
            continue
        out[name] = {
            "customers": int(len(both)),
            "segment": float((both["segment_id"] == both["segment_id_before"]).mean()),
            "rfm_segment": float((both["rfm_segment"] == both["rfm_segment_before"]).mean()),
        }
    return out
