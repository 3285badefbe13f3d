"""The impressions input: every row used or quarantined with a reason, erased customers dropped."""

import duckdb
import pytest

from seg_pipeline.lib.ingest import IngestError
from seg_pipeline.lib.ingest.impressions import ingest_impressions, no_impressions
from seg_pipeline.lib.privacy import erase_customers

LOG = """customer_id,item_id,shown_at,clicked,purchased
c1,i1,2025-01-01 10:00,true,false
c1,i1,2025-01-01 10:00,true,false
c2,,2025-01-01,0,0
c3,i2,yesterday,0,0
c4,i3,2025-01-02,maybe,0
c5,i4,2025-01-02,,
c6,i5.0,2025-01-03,yes,1
"""


def test_rows_read_are_used_or_quarantined_with_a_reason(write_csv):
    con = duckdb.connect()
    result = ingest_impressions(
        con, write_csv(LOG, "impressions.csv"), run_id="r", max_bad_share=0.9
    )
    assert (result.rows_read, result.rows_used, result.rows_quarantined) == (7, 3, 4)
    assert result.reasons == {
        "bad_flag": 1,
        "bad_timestamp": 1,
        "duplicate_impression": 1,
        "missing_item_id": 1,
    }
    used = con.execute(
        "select customer_id, item_id, clicked, purchased from raw_impressions order by 1"
    ).fetchall()
    assert used == [("c1", "i1", True, False), ("c5", "i4", False, False), ("c6", "i5", True, True)]
    lines = con.execute("select source_line from quarantined_impressions order by 1").fetchall()
    assert [r[0] for r in lines] == [3, 4, 5, 6]


def test_a_missing_column_or_too_many_bad_rows_fail_clearly(write_csv):
    con = duckdb.connect()
    with pytest.raises(IngestError, match="lacks the column"):
        ingest_impressions(con, write_csv("customer_id,item_id\nc1,i1\n", "a.csv"), run_id="r")
    with pytest.raises(IngestError, match="unusable"):
        ingest_impressions(con, write_csv(LOG, "b.csv"), run_id="r", max_bad_share=0.5)


def test_an_erased_customer_is_counted_not_stored(write_csv):
    con = duckdb.connect()
    no_impressions(con, run_id="r")
    erase_customers(con, ["c6"], "key")
    result = ingest_impressions(
        con, write_csv(LOG, "c.csv"), run_id="r", max_bad_share=0.9, pseudonym_key="key"
    )
    assert result.rows_erased == 1 and result.rows_read == 7
    assert con.execute(
        "select count(*) from raw_impressions where customer_id = 'c6'"
    ).fetchall() == [(0,)]
