"""The feedback loop: what happened to the recommendations customers were shown.

Each impression (``raw_impressions``, from ``--impressions``) is attributed once, the first night
it is read, to the list that was live then (last night's ``customer_recommendations``: its model
and rank, or ``(not recommended)``) and to the customer's segment; later nights keep that
attribution (``impression_log``) and only refresh the clicked and purchased flags, so a daily
impressions feed is credited to the lists that produced it. ``recommendation_feedback`` sums the
log per model, segment, rank and day.

An item shown to a customer ``demote_after`` times in the last ``window_days`` days without a
click or a purchase is demoted: it leaves that customer's list from the next night on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from seg_pipeline.lib.ingest.incremental import has_tables

NOT_RECOMMENDED = "(not recommended)"


@dataclass(frozen=True)
class FeedbackSettings:
    """Demotion of items shown without interaction; ``demote_after`` None switches it off."""

    demote_after: int | None = 3
    window_days: int = 30


def attribute_impressions(con: duckdb.DuckDBPyConnection) -> int:
    """Rebuild ``impression_log`` from ``raw_impressions``, keeping earlier attributions and
    attributing new impressions to the lists live now; returns the impressions logged."""
    shown = (
        "select * from raw_impressions"
        if has_tables(con, ("raw_impressions",))
        else "select null::varchar as customer_id, null::varchar as item_id, "
        "null::timestamp as shown_at, null::boolean as clicked, null::boolean as purchased "
        "where false"
    )
    lists = (
        "select customer_id, item_id, model, rank from customer_recommendations"
        if has_tables(con, ("customer_recommendations",))
        else "select null::varchar as customer_id, null::varchar as item_id, "
        "null::varchar as model, null::integer as rank where false"
    )
    segments = (
        "select customer_id, segment_id::varchar as segment_id from customer_segments"
        if has_tables(con, ("customer_segments",))
        else "select null::varchar as customer_id, null::varchar as segment_id where false"
    )
    earlier = (
        "select * from impression_log"
        if has_tables(con, ("impression_log",))
        else "select null::varchar as customer_id, null::varchar as item_id, "
        "null::timestamp as shown_at, null::varchar as model, null::integer as rank, "
        "null::varchar as segment_id where false"
    )
    con.execute(
        f"""
        create or replace table impression_log as
        with shown as ({shown}), earlier as ({earlier}), lists as ({lists}),
             segments as ({segments})
        select i.customer_id, i.item_id, i.shown_at, i.clicked, i.purchased,
            case when e.customer_id is not null then e.model
                 else coalesce(l.model, '{NOT_RECOMMENDED}') end as model,
            case when e.customer_id is not null then e.rank else l.rank end as rank,
            case when e.customer_id is not null then e.segment_id else s.segment_id end
                as segment_id
        from shown i
        left join earlier e using (customer_id, item_id, shown_at)
        left join lists l using (customer_id, item_id)
        left join segments s using (customer_id)
        """
    )
    return con.execute("select count(*) from impression_log").fetchall()[0][0]


def demoted_pairs(
    con: duckdb.DuckDBPyConnection,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    as_of: date,
    settings: FeedbackSettings,
) -> sp.csr_matrix:
    """Customers × items, 1 where the item was shown ``demote_after`` times in the window
    without a click or a purchase (rows and columns as ``user_ids`` and ``item_ids``)."""
    shape = (len(user_ids), len(item_ids))
    if settings.demote_after is None or not has_tables(con, ("impression_log",)):
        return sp.csr_matrix(shape, dtype=np.float32)
    cur = con.cursor()
    cur.register("_fb_users", pa.table({"customer_id": user_ids, "u": np.arange(shape[0])}))
    cur.register("_fb_items", pa.table({"item_id": item_ids, "i": np.arange(shape[1])}))
    pairs = cur.execute(
        """
        select u.u, i.i from (
            select customer_id, item_id from impression_log
            where shown_at >= $since and shown_at < $as_of
            group by all
            having count(*) >= $after and not bool_or(clicked or purchased)
        ) d
        join _fb_users u using (customer_id)
        join _fb_items i using (item_id)
        """,
        {
            "since": as_of - timedelta(days=settings.window_days),
            "as_of": as_of,
            "after": settings.demote_after,
        },
    ).fetchnumpy()
    cur.close()
    rows, cols = np.asarray(pairs["u"], np.int64), np.asarray(pairs["i"], np.int64)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)


def shown_recently(
    con: duckdb.DuckDBPyConnection, user_ids: np.ndarray, as_of: date, window_days: int
) -> np.ndarray:
    """Which customers were shown anything in the window: their demotions may have changed, so
    a night between refits re-scores them."""
    if not has_tables(con, ("impression_log",)):
        return np.zeros(len(user_ids), dtype=bool)
    shown = con.execute(
        "select distinct customer_id from impression_log where shown_at >= $since",
        {"since": as_of - timedelta(days=window_days)},
    ).fetchnumpy()["customer_id"]
    return np.isin(user_ids, np.asarray(shown, dtype=object))


def write_feedback(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    """Replace ``recommendation_feedback`` with the sums of ``impression_log`` (written by
    ``attribute_impressions``) per model, segment, rank and day; returns totals that reconcile
    with ``raw_impressions``."""
    con.execute(
        """
        create or replace table recommendation_feedback as
        select model, segment_id, rank, shown_at::date as day,
               count(*) as impressions,
               count(*) filter (where clicked) as clicks,
               count(*) filter (where purchased) as purchases,
               count(*) filter (where clicked) / count(*) as click_through,
               count(*) filter (where purchased) / count(*) as conversion,
               $run_id as run_id
        from impression_log group by all order by day, model, segment_id, rank
        """,
        {"run_id": run_id},
    )
    total = con.execute(
        "select count(*), coalesce(sum(impressions), 0), coalesce(sum(clicks), 0), "
        "coalesce(sum(purchases), 0) from recommendation_feedback"
    ).fetchall()[0]
    return dict(
        zip(("dagster/row_count", "impressions", "clicks", "purchases"), total, strict=True)
    )
