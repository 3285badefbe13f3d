"""Impressions credited to the lists that were shown, the feedback sums and demotion."""

from datetime import date

import duckdb
import numpy as np
import pytest

from seg_pipeline.lib.recommendations import feedback as fb


@pytest.fixture
def con():
    con = duckdb.connect()
    con.execute(
        "create table customer_recommendations as select * from (values "
        "('a', 'x', 'als', 1), ('a', 'y', 'als', 2), ('b', 'x', 'als', 1)) "
        "t(customer_id, item_id, model, rank)"
    )
    con.execute(
        "create table customer_segments as select * from (values ('a', 0), ('b', 1)) "
        "t(customer_id, segment_id)"
    )
    con.execute(
        "create table raw_impressions as select customer_id, item_id, shown_at::timestamp "
        "as shown_at, clicked, purchased from (values "
        "('a', 'x', '2025-01-01 10:00', false, false), ('a', 'x', '2025-01-02 10:00', false, "
        "false), ('a', 'x', '2025-01-03 10:00', false, false), ('a', 'y', '2025-01-01', true, "
        "true), ('b', 'x', '2025-01-01', false, false), ('b', 'z', '2025-01-02', true, false)) "
        "t(customer_id, item_id, shown_at, clicked, purchased)"
    )
    return con


def test_impressions_are_credited_once_to_the_list_live_when_first_read(con):
    assert fb.attribute_impressions(con) == 6
    con.execute("update customer_recommendations set model = 'ease', rank = rank + 5")
    con.execute("insert into raw_impressions values ('b', 'x', '2025-01-05', false, false)")
    con.execute(
        "update raw_impressions set clicked = true where customer_id = 'b' and item_id = 'x'"
    )
    assert fb.attribute_impressions(con) == 7
    rows = con.execute(
        "select shown_at::date::varchar, model, rank, clicked from impression_log "
        "where customer_id = 'b' and item_id = 'x' order by 1"
    ).fetchall()
    # The first impression keeps last night's credit; the new one gets tonight's list; the
    # click a later file reports is taken.
    assert rows == [("2025-01-01", "als", 1, True), ("2025-01-05", "ease", 6, True)]
    assert con.execute("select model, rank from impression_log where item_id = 'z'").fetchall() == [
        (fb.NOT_RECOMMENDED, None)
    ]


def test_feedback_sums_reconcile_with_the_impressions(con):
    fb.attribute_impressions(con)
    meta = fb.write_feedback(con, "run")
    assert (meta["impressions"], meta["clicks"], meta["purchases"]) == (6, 2, 1)
    rows = con.execute(
        "select model, segment_id, rank, day::varchar, impressions, clicks, click_through "
        "from recommendation_feedback where model = 'als' and rank = 1 order by segment_id, day"
    ).fetchall()
    assert rows[0] == ("als", "0", 1, "2025-01-01", 1, 0, 0.0)
    assert sum(r[4] for r in rows) == 4  # a's three and b's one impression of x at rank 1


def test_an_item_shown_three_times_without_interaction_is_demoted_within_the_window(con):
    fb.attribute_impressions(con)
    users, items = np.array(["a", "b"], object), np.array(["x", "y", "z"], object)
    settings = fb.FeedbackSettings(demote_after=3, window_days=30)
    demoted = fb.demoted_pairs(con, users, items, date(2025, 1, 10), settings)
    assert demoted.toarray().tolist() == [[1, 0, 0], [0, 0, 0]]
    # Out of the window, or switched off: nothing is demoted.
    late = fb.demoted_pairs(con, users, items, date(2025, 3, 1), settings)
    off = fb.demoted_pairs(con, users, items, date(2025, 1, 10), fb.FeedbackSettings(None))
    assert late.nnz == 0 and off.nnz == 0
    assert fb.shown_recently(con, users, date(2025, 1, 10), 30).tolist() == [True, True]
