import gzip

import duckdb
import pytest

from seg_pipeline.lib.ingest import IngestError, ingest_events, ingest_items, resolve_sources

HEADER = "customer_id,item_id,event_ts,event_type,quantity,unit_price,order_id,value\n"


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "work.duckdb"))
    yield connection
    connection.close()


def _reasons(con):
    return dict(
        con.execute(
            "select source_line, reason from quarantined_events order by source_line"
        ).fetchall()
    )


def test_every_bad_row_is_quarantined_with_its_line_and_reason(con, write_csv):
    path = write_csv(
        HEADER
        + "\n".join(
            [
                "c1,i1,2025-01-01T10:00:00,purchase,2,3.5,o1,",  # line 2: good
                "c1,,2025-01-02,purchase,1,3.5,o2,",  # 3: missing item
                "c1,i1,yesterday,purchase,1,3.5,o3,",  # 4: bad timestamp
                "c1,i1,2025-01-03,teleport,1,3.5,o4,",  # 5: unknown event type
                "c1,i1,2025-01-03,purchase,lots,3.5,o5,",  # 6: bad quantity
                "c1,i1,2025-01-03,purchase,0,3.5,o6,",  # 7: zero quantity
                "c1,i1,2025-01-03,purchase,1,-2,o7,",  # 8: negative price
                ",i1,2025-01-03,rating,1,,,4",  # 9: rating without customer
                "c1,i1,2025-01-01T10:00:00,purchase,2,3.5,o1,",  # 10: duplicate of line 2
                "c2,i2,2025-01-04,purchase,-1,3.5,o8,",  # 11: a return (negative qty)
                ",i2,2025-01-04,purchase,1,3.5,,",  # 12: anonymous, kept
                "c2,i2,2025-01-05,rating,1,,,5",  # 13: rating, kept
            ]
        )
        + "\n"
    )
    result = ingest_events(con, path, run_id="r1", max_bad_share=0.9)
    assert result.rows_read == 12
    assert result.rows_used == 4
    assert result.rows_quarantined == 8
    assert _reasons(con) == {
        3: "missing_item_id",
        4: "bad_timestamp",
        5: "unknown_event_type",
        6: "bad_quantity",
        7: "zero_quantity",
        8: "bad_price",
        9: "missing_customer_id",
        10: "duplicate_event",
    }
    rows = con.execute(
        "select source_line, customer_id, event_type, quantity from raw_events order by source_line"
    ).fetchall()
    assert rows == [
        (2, "c1", "purchase", 2.0),
        (11, "c2", "return", 1.0),
        (12, None, "purchase", 1.0),
        (13, "c2", "rating", 1.0),
    ]
    assert result.as_of.isoformat() == "2025-01-06"


def test_malformed_lines_keep_exact_line_numbers(con, write_csv):
    path = write_csv(
        HEADER
        + "\n".join(
            [
                "c1,i1,2025-01-01,purchase,1,1,o1,",
                "c1,i2,2025-01-01",  # line 3: too few columns
                "c1,i3,2025-01-01,purchase,1,1,o1,,extra",  # line 4: too many
                "c1,i4,2025-01-02,purchase,1,1,o2,",  # line 5
            ]
        )
        + "\n"
    )
    result = ingest_events(con, path, run_id="r1", max_bad_share=0.9)
    assert result.rows_read == result.rows_used + result.rows_quarantined == 4
    assert _reasons(con) == {3: "malformed_row", 4: "malformed_row"}
    lines = [r[0] for r in con.execute("select source_line from raw_events order by 1").fetchall()]
    assert lines == [2, 5]


def test_events_after_as_of_are_quarantined(con, write_csv):
    path = write_csv(
        HEADER + "c1,i1,2025-01-01,,,,,\nc1,i1,2025-02-01,,,,,\nc1,i2,2025-01-31T23:59:59,,,,,\n"
    )
    result = ingest_events(con, path, as_of=__import__("datetime").date(2025, 2, 1), run_id="r")
    assert result.reasons == {"after_as_of": 1}
    assert con.execute(
        "select count(*) from raw_events where event_type = 'purchase'"
    ).fetchall() == [(2,)]


def test_timezones_are_converted_to_utc(con, write_csv):
    path = write_csv(
        "customer_id,item_id,event_ts\nc1,i1,2025-01-01T10:00:00+02:00\nc1,i2,2025-01-01T10:00:00Z\n"
    )
    ingest_events(con, path, run_id="r")
    hours = [
        r[0]
        for r in con.execute("select hour(event_ts) from raw_events order by item_id").fetchall()
    ]
    assert hours == [8, 10]


def test_online_retail_layout_is_mapped(con, write_csv):
    path = write_csv(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
        "C536379,85123A,WHITE HANGING HEART,-1,2010-12-01 09:41:00,2.55,17850.0,United Kingdom\n"
        "536366,POST,POSTAGE,1,2010-12-01 09:00:00,18.0,17850.0,United Kingdom\n"
        "536367,22633,HAND WARMER,6,2010-12-01 10:00:00,1.85,,United Kingdom\n"
    )
    result = ingest_events(con, path, fmt="online_retail", run_id="r")
    assert result.reasons == {"non_product": 1}
    rows = con.execute(
        "select customer_id, item_id, event_type, quantity, order_id, country from raw_events "
        "order by source_line"
    ).fetchall()
    assert rows[0] == ("17850", "85123A", "purchase", 6.0, "536365", "United Kingdom")
    assert rows[1][2:4] == ("return", 1.0)
    assert rows[2][0] is None  # anonymous line kept for item statistics
    assert ingest_items(con, None, run_id="r") == 2
    assert con.execute("select title from raw_items where item_id = '85123A'").fetchall() == [
        ("WHITE HANGING HEART",)
    ]


def test_gzip_parquet_and_glob_inputs_agree(con, tmp_path, small_shop_files):
    csv_path = small_shop_files["events"]
    plain = ingest_events(con, csv_path, run_id="r")
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(csv_path.read_bytes()))
    assert ingest_events(con, gz, run_id="r").rows_used == plain.rows_used
    pq = tmp_path / "parts" / "events.parquet"
    pq.parent.mkdir()
    duckdb.connect().execute(
        f"copy (select * from read_csv('{csv_path}', all_varchar=true)) to '{pq}'"
    )
    from_parquet = ingest_events(con, tmp_path / "parts" / "*.parquet", run_id="r")
    assert from_parquet.rows_used == plain.rows_used
    assert from_parquet.reasons == plain.reasons


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("customer_id item_id event_ts\nc1 i1 2025-01-01\n", "is the delimiter a comma?"),
        ("customer_id,event_ts\nc1,2025-01-01\n", "missing required column(s) item_id"),
        (
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
            "1,A,x,1,2010-12-01 08:26:00,1,1,UK\n",
            "--format online_retail",
        ),
        ("customer_id,item_id,event_ts\n", "no event rows"),
        (
            "customer_id,item_id,event_ts\nc1,i1,never\nc1,i1,nope\nc2,i2,2025-01-01\n",
            "above the 50% limit",
        ),
    ],
)
def test_bad_files_raise_one_readable_line(con, write_csv, content, message):
    path = write_csv(content)
    with pytest.raises(IngestError) as info:
        ingest_events(con, path, run_id="r")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_semicolon_delimiter_is_detected(con, write_csv):
    path = write_csv("customer_id;item_id;event_ts\nc1;i1;2025-01-01\n")
    assert ingest_events(con, path, run_id="r").rows_used == 1


def test_missing_glob_and_truncated_gzip(tmp_path):
    with pytest.raises(IngestError, match="no files match"):
        resolve_sources(tmp_path / "nothing-*.csv")
    full = gzip.compress(("customer_id,item_id,event_ts\n" + "c,i,2025-01-01\n" * 5000).encode())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(IngestError, match="not a complete gzip"):
        resolve_sources(cut)


def test_items_file_with_repeated_id_is_refused(con, write_csv, small_shop_files):
    ingest_events(con, small_shop_files["events"], run_id="r")
    path = write_csv("item_id,title\nA,x\nA,y\n", name="items.csv")
    with pytest.raises(IngestError, match="repeats item_id"):
        ingest_items(con, path, run_id="r")
