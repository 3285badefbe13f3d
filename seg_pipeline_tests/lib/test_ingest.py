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


def test_online_retail_title_is_the_most_frequent_description_ties_alphabetical(con, write_csv):
    head = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    line = "5364{i:02d},{item},{text},1,2010-12-01 08:{i:02d}:00,2.5,17850.0,United Kingdom\n"
    # 85001: two descriptions twice each (a tie); 85002: one three times, another once.
    texts = [("85001", "ZEBRA MUG"), ("85001", "ALPHA MUG")] * 2
    texts += [("85002", "RARE"), ("85002", "COMMON"), ("85002", "COMMON"), ("85002", "COMMON")]
    texts += [("85003", None)]
    body = "".join(
        line.format(i=i, item=item, text=text or "") for i, (item, text) in enumerate(texts)
    )
    ingest_events(con, write_csv(head + body), fmt="online_retail", run_id="r")
    ingest_items(con, None, run_id="r")
    titles = dict(con.execute("select item_id, title from raw_items order by 1").fetchall())
    assert titles["85001"] == "ALPHA MUG"
    assert titles["85002"] == "COMMON"
    assert titles["85003"] in (None, "85003")  # no description: no title from the events


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


def _daily_files(small_shop_files, folder):
    """The small shop's events as one Parquet file per day (names sort by date), plus a
    copy of a first-day row on the last day and a bad row, so duplicates cross files."""
    import pandas as pd

    events = pd.read_csv(small_shop_files["events"], dtype=str, keep_default_na=False)
    events = events.replace("", None)
    day = events["event_ts"].str[:10]
    days = sorted(day.unique())
    first, last = days[0], days[-1]
    extra = pd.concat([events[day == first].head(1), events[day == first].head(1)])
    extra["event_ts"] = [extra["event_ts"].iloc[0], f"{last}T23:59:59"]
    extra.iloc[1, extra.columns.get_loc("item_id")] = None  # a bad row on the last day
    events = pd.concat([events, extra.assign(_day=last)], ignore_index=True)
    events["_day"] = events["_day"].fillna(day) if "_day" in events else day
    folder.mkdir()
    paths = []
    for d, rows in events.groupby("_day", sort=True):
        path = folder / f"events_{d}.parquet"
        rows.drop(columns="_day").to_parquet(path, index=False)
        paths.append(path)
    return paths


def _tables(con):
    """The ingest tables without run ids, source files by name (the test folders differ)."""
    name = "regexp_extract(source_file, '[^/]+$') as file"
    raw = con.execute(
        f"select * exclude (run_id, source_file), {name} from raw_events order by event_id"
    ).fetchall()
    quarantined = con.execute(
        f"select * exclude (run_id, source_file), {name} from quarantined_events "
        "order by file, source_line"
    ).fetchall()
    manifest = con.execute(
        "select as_of, rows_read, rows_used, rows_quarantined, rows_erased, "
        "list_transform(source_files, lambda x: regexp_extract(x, '[^/]+$')) from ingest_manifest"
    ).fetchall()
    return raw, quarantined, manifest


def test_incremental_daily_ingest_equals_a_full_rebuild(tmp_path, small_shop_files):
    paths = _daily_files(small_shop_files, tmp_path / "all")
    full = duckdb.connect(str(tmp_path / "full.duckdb"))
    ingest_events(full, str(tmp_path / "all" / "*.parquet"), run_id="full", incremental=False)
    expected = _tables(full)
    assert ("duplicate_event",) in full.execute("select reason from quarantined_events").fetchall()

    # Nightly runs: most days at first, then one new day per night, then a quiet night.
    nightly = tmp_path / "nightly"
    nightly.mkdir()
    inc = duckdb.connect(str(tmp_path / "inc.duckdb"))
    split = len(paths) - 3
    for path in paths[:split]:
        (nightly / path.name).write_bytes(path.read_bytes())
    ingest_events(inc, str(nightly / "*.parquet"), run_id="night0")
    for night, path in enumerate(paths[split:], start=1):
        (nightly / path.name).write_bytes(path.read_bytes())
        result = ingest_events(inc, str(nightly / "*.parquet"), run_id=f"night{night}")
        read = inc.execute("select files_read_this_run from ingest_manifest").fetchall()[0][0]
        assert [p.rsplit("/", 1)[-1] for p in read] == [path.name]  # only the new day
        assert result.rows_read == result.rows_used + result.rows_quarantined + result.rows_erased
    ingest_events(inc, str(nightly / "*.parquet"), run_id="quiet")
    assert inc.execute("select files_read_this_run from ingest_manifest").fetchall()[0][0] == []
    assert _tables(inc) == expected  # same rows, ids, reasons and counts
    # The quarantine is owned by the run that last wrote it (publishing checks one run id).
    assert inc.execute("select distinct run_id from quarantined_events").fetchall() == [("quiet",)]


def test_a_changed_old_file_makes_the_ingest_read_everything_again(tmp_path, small_shop_files):
    import pandas as pd

    paths = _daily_files(small_shop_files, tmp_path / "days")
    glob = str(tmp_path / "days" / "*.parquet")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ingest_events(con, glob, run_id="a")
    old = pd.read_parquet(paths[0])
    old.iloc[:-1].to_parquet(paths[0], index=False)  # an earlier day was corrected upstream
    ingest_events(con, glob, run_id="b")
    read = con.execute("select files_read_this_run from ingest_manifest").fetchall()[0][0]
    assert len(read) == len(paths)
    fresh = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    ingest_events(fresh, glob, run_id="c", incremental=False)
    assert _tables(con) == _tables(fresh)


def test_events_stored_without_content_hashes_are_read_again(tmp_path, small_shop_files):
    # A working file from before raw_events carried each row's hash cannot tell a new row from
    # a copy of a stored one: the next ingest reads every file and rebuilds the tables.
    paths = _daily_files(small_shop_files, tmp_path / "days")
    (tmp_path / "later").mkdir()
    late = paths[-1].rename(tmp_path / "later" / paths[-1].name)
    glob = str(tmp_path / "days" / "*.parquet")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    ingest_events(con, glob, run_id="a")
    con.execute("alter table raw_events drop column content_hash")
    late.rename(tmp_path / "days" / late.name)
    ingest_events(con, glob, run_id="b")
    read = con.execute("select files_read_this_run from ingest_manifest").fetchall()[0][0]
    assert len(read) == len(paths)
    assert "content_hash" in [r[0] for r in con.execute("describe raw_events").fetchall()]
    fresh = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    ingest_events(fresh, glob, run_id="c", incremental=False)
    assert _tables(con) == _tables(fresh)


def test_a_quoted_field_after_the_sniffers_sample_is_read_whole(con, write_csv):
    """The first quoted field (a comma inside) on row 25,001: DuckDB's sniffer, which looks at
    the first rows only, once read such files without quotes, failing the items file on that
    row and quarantining the event."""
    plain = [f"c{n},i{n % 50},2025-01-01T10:00:00,view,1,,,\n" for n in range(25_000)]
    late = 'c1,i1,2025-01-02T10:00:00,purchase,1,3.5,"ord,1 ""gift""",\n'
    result = ingest_events(con, write_csv(HEADER + "".join(plain) + late), run_id="r1")
    assert (result.rows_read, result.rows_used, result.rows_quarantined) == (25_001, 25_001, 0)
    assert con.execute(
        "select order_id from raw_events where event_type = 'purchase'"
    ).fetchall() == [('ord,1 "gift"',)]
    items = ["item_id,title,description,category,price,available\n"]
    items += [f"i{n},Plain item {n},Plain,Kitchen,2.5,true\n" for n in range(25_000)]
    items.append('NEW1,"Bowl, blue",New,Kitchen,3.5,true\n')
    assert ingest_items(con, write_csv("".join(items), "items.csv"), run_id="r1") == 25_001
    title = con.execute("select title from raw_items where item_id = 'NEW1'").fetchall()
    assert title == [("Bowl, blue",)]
