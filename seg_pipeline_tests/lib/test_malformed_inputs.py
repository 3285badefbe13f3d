"""The malformed-input suite: each case either fails with one readable line, or reconciles
``rows read = rows used + rows quarantined`` with every bad row carrying the expected reason."""

import datetime as dt
import gzip

import duckdb
import pytest

from seg_pipeline.lib.ingest import IngestError, ingest_events

H = "customer_id,item_id,event_ts,event_type,quantity,unit_price,order_id,value\n"
OK = "c1,i1,2025-01-01T10:00:00,purchase,1,2.5,o1,\n"
OK2 = "c2,i2,2025-01-02T10:00:00,purchase,2,3.5,o2,\n"
RETAIL_H = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"

# (id, file name, content (str or bytes), options, expected): expected is either
# ("error", text in the message) or ("ok", rows read, {reason: count}).
CASES = [
    ("empty_file", "e.csv", "", {}, ("error", "is empty")),
    ("header_only", "e.csv", H, {}, ("error", "no event rows")),
    (
        "missing_required_column",
        "e.csv",
        "customer_id,event_ts\nc1,2025-01-01\n",
        {},
        ("error", "missing required column(s) item_id"),
    ),
    (
        "unsplittable_delimiter",
        "e.csv",
        "customer_id item_id event_ts\nc1 i1 2025-01-01\n",
        {},
        ("error", "is the delimiter a comma?"),
    ),
    (
        "wrong_format_flag",
        "e.csv",
        H + OK,
        {"fmt": "online_retail"},
        ("error", "--format canonical"),
    ),
    ("unknown_format", "e.csv", H + OK, {"fmt": "xml"}, ("error", "unknown format")),
    ("not_a_csv_extension", "e.json", '{"a": 1}', {}, ("error", "is not a CSV")),
    (
        "mostly_bad_rows",
        "e.csv",
        H + "c1,i1,never,,,,,\n" * 3 + OK,
        {},
        ("error", "above the 50% limit"),
    ),
    ("semicolon_delimiter", "e.csv", (H + OK + OK2).replace(",", ";"), {}, ("ok", 2, {})),
    ("tab_delimiter", "e.tsv", (H + OK + OK2).replace(",", "\t"), {}, ("ok", 2, {})),
    ("crlf_line_endings", "e.csv", (H + OK + OK2).replace("\n", "\r\n"), {}, ("ok", 2, {})),
    ("utf8_bom", "e.csv", ("\ufeff" + H + OK + OK2).encode("utf-8"), {}, ("ok", 2, {})),
    (
        "quoted_comma_and_newline",
        "e.csv",
        H + 'c1,i1,2025-01-01,purchase,1,2.5,"o,1",\n' + 'c2,"i\n2",2025-01-02,,,,,\n',
        {},
        ("ok", 2, {}),
    ),
    (
        "invalid_utf8_line",
        "e.csv",
        (H + OK).encode() + b"c\xe9,i9,2025-01-03,,,,,\n" + OK2.encode(),
        {},
        ("ok", 3, {"invalid_encoding": 1}),
    ),
    ("too_few_columns", "e.csv", H + OK + "c1,i1\n" + OK2, {}, ("ok", 3, {"malformed_row": 1})),
    (
        "too_many_columns",
        "e.csv",
        H + OK + "c1,i1,2025-01-01,,,,,,x,y\n" + OK2,
        {},
        ("ok", 3, {"malformed_row": 1}),
    ),
    (
        "bad_timestamp",
        "e.csv",
        H + OK + "c1,i1,31/02/2025,,,,,\n",
        {},
        ("ok", 2, {"bad_timestamp": 1}),
    ),
    (
        "event_after_as_of",
        "e.csv",
        H + OK + "c1,i3,2025-03-01,,,,,\n",
        {"as_of": dt.date(2025, 2, 1)},
        ("ok", 2, {"after_as_of": 1}),
    ),
    (
        "non_numeric_price",
        "e.csv",
        H + OK + "c1,i1,2025-01-03,purchase,1,cheap,o3,\n",
        {},
        ("ok", 2, {"bad_price": 1}),
    ),
    (
        "negative_price",
        "e.csv",
        H + OK + "c1,i1,2025-01-03,purchase,1,-1,o3,\n",
        {},
        ("ok", 2, {"bad_price": 1}),
    ),
    (
        "zero_quantity",
        "e.csv",
        H + OK + "c1,i1,2025-01-03,purchase,0,1,o3,\n",
        {},
        ("ok", 2, {"zero_quantity": 1}),
    ),
    (
        "non_numeric_quantity",
        "e.csv",
        H + OK + "c1,i1,2025-01-03,purchase,two,1,o3,\n",
        {},
        ("ok", 2, {"bad_quantity": 1}),
    ),
    ("duplicate_rows", "e.csv", H + OK + OK + OK + OK2, {}, ("ok", 4, {"duplicate_event": 2})),
    (
        "unknown_event_type",
        "e.csv",
        H + OK + "c1,i1,2025-01-03,wishlist,,,,\n",
        {},
        ("ok", 2, {"unknown_event_type": 1}),
    ),
    (
        "rating_without_customer",
        "e.csv",
        H + OK + ",i1,2025-01-03,rating,,,,4\n",
        {},
        ("ok", 2, {"missing_customer_id": 1}),
    ),
    (
        "rating_without_value",
        "e.csv",
        H + OK + "c1,i1,2025-01-03,rating,,,,\n",
        {},
        ("ok", 2, {"bad_value": 1}),
    ),
    (
        "missing_item_id",
        "e.csv",
        H + OK + "c1,,2025-01-03,,,,,\n",
        {},
        ("ok", 2, {"missing_item_id": 1}),
    ),
    (
        "online_retail_quirks",
        "r.csv",
        RETAIL_H + "1,A,x,1,2010-12-01 08:26:00,1.5,17850.0,UK\n"
        "2,POST,postage,1,2010-12-01 09:00:00,18,17850.0,UK\n"
        "3,B,Adjust bad debt,1,2010-12-02 09:00:00,-11062.06,,UK\n"
        "C4,A,x,-1,2010-12-02 10:00:00,1.5,17850.0,UK\n",
        {"fmt": "online_retail"},
        ("ok", 4, {"non_product": 2}),
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "options", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_malformed_input(tmp_path, name, content, options, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, newline="")
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    if expected[0] == "error":
        with pytest.raises(IngestError) as info:
            ingest_events(con, path, run_id="r", **options)
        assert expected[1] in str(info.value)
        assert "\n" not in str(info.value)
        return
    _, rows, reasons = expected
    result = ingest_events(con, path, run_id="r", **options)
    used, quarantined = con.execute(
        "select (select count(*) from raw_events), (select count(*) from quarantined_events)"
    ).fetchall()[0]
    assert result.rows_read == rows
    assert rows == used + quarantined
    assert result.reasons == reasons
    manifest = con.execute(
        "select rows_read, rows_used, rows_quarantined from ingest_manifest"
    ).fetchall()
    assert manifest == [(rows, used, quarantined)]


def test_truncated_gzip(tmp_path):
    data = gzip.compress((H + OK * 20000).encode())
    path = tmp_path / "e.csv.gz"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(IngestError, match="not a complete gzip"):
        ingest_events(duckdb.connect(), path, run_id="r")


def test_glob_without_matches_and_folder(tmp_path):
    with pytest.raises(IngestError, match="no files match"):
        ingest_events(duckdb.connect(), tmp_path / "*.csv", run_id="r")
    with pytest.raises(IngestError, match="is a folder"):
        ingest_events(duckdb.connect(), tmp_path, run_id="r")


def test_mixed_csv_and_parquet_glob(tmp_path):
    (tmp_path / "a.csv").write_text(H + OK)
    duckdb.connect().execute(f"copy (select 1 as x) to '{tmp_path / 'b.parquet'}'")
    with pytest.raises(IngestError, match="mixes CSV and Parquet"):
        ingest_events(duckdb.connect(), tmp_path / "*", run_id="r")


def test_parquet_missing_column(tmp_path):
    path = tmp_path / "e.parquet"
    duckdb.connect().execute(f"copy (select 'c1' as customer_id, 'i1' as item_id) to '{path}'")
    with pytest.raises(IngestError, match="missing required column"):
        ingest_events(duckdb.connect(), path, run_id="r")


def test_damaged_parquet_is_a_clear_error_and_publishes_nothing(tmp_path):
    """Parquet rows are read by the classifying pass (the landing is a view), so a data page
    that fails to decompress must still end as an IngestError, with no table written."""
    path = tmp_path / "e.parquet"
    duckdb.connect().execute(
        f"copy (select 'c' || (i % 97) as customer_id, 'i' || (i % 31) as item_id, "
        f"timestamp '2025-01-01' + to_seconds(i) as event_ts, "
        f"md5(i::varchar) as order_id from range(20000) t(i)) to '{path}' "
        "(compression snappy)"
    )
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 2000] = b"\xab" * 2000
    path.write_bytes(bytes(data))
    con = duckdb.connect()
    with pytest.raises(IngestError, match="cannot read"):
        ingest_events(con, path, run_id="r")
    assert con.execute("select count(*) from duckdb_tables() where not temporary").fetchall() == [
        (0,)
    ]


def test_multi_file_glob_keeps_per_file_lines(tmp_path):
    (tmp_path / "a.csv").write_text(H + OK + "c1,i1\n")
    (tmp_path / "b.csv").write_text(H + "c1,,2025-01-05,,,,,\n" + OK2)
    con = duckdb.connect()
    result = ingest_events(con, tmp_path / "*.csv", run_id="r")
    assert result.rows_read == 4
    rows = con.execute(
        "select regexp_extract(source_file, '[ab]\\.csv'), source_line, reason "
        "from quarantined_events order by 1"
    ).fetchall()
    assert rows == [("a.csv", 3, "malformed_row"), ("b.csv", 2, "missing_item_id")]
