import duckdb
import pytest

from seg_pipeline.lib.ingest import ingest_events
from seg_pipeline.lib.privacy import (
    artifacts_mentioning,
    erase_customers,
    load_or_create_key,
    pseudonymise,
    read_id_list,
    replace_opt_outs,
)

KEY = "test-key"


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "work.duckdb"))
    yield connection
    connection.close()


def test_python_and_sql_pseudonyms_agree(con):
    sql = con.execute("select sha256($key || ':' || 'C42')", {"key": KEY}).fetchall()[0][0]
    assert sql == pseudonymise("C42", KEY)
    assert pseudonymise("C42", KEY) != pseudonymise("C42", "other-key")


def test_key_file_is_created_once_and_private(tmp_path):
    path = tmp_path / "k"
    first = load_or_create_key(path)
    assert load_or_create_key(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(path, env_value="from-env") == "from-env"


def test_id_lists_from_csv_or_plain_lines(tmp_path):
    (tmp_path / "a.csv").write_text("email,customer_id\nx@y,C1\nz@w,C2\n")
    (tmp_path / "b.txt").write_text("C3\n\nC4\n")
    assert read_id_list(tmp_path / "a.csv") == ["C1", "C2"]
    assert read_id_list(tmp_path / "b.txt") == ["C3", "C4"]


def test_erasure_removes_every_row_and_later_ingests_drop_the_customer(con, write_csv):
    path = write_csv(
        "customer_id,item_id,event_ts\n"
        "C1,i1,2025-01-01\nC2,i1,2025-01-02\nC1,i2,2025-01-03\n"
        "C1,i3\n"  # malformed line that still names C1
        "C2,,2025-01-04\n"  # quarantined row of C2
        "C1,,2025-01-05\n"  # quarantined row of C1
    )
    ingest_events(con, path, run_id="r1")
    con.execute("create table customer_scores as select 'C1' as customer_id, 5 as score")
    deleted = erase_customers(con, ["C1"], KEY)
    # The content hashes kept for incremental ingest live on the customer's rows (raw_events)
    # and, for quarantined rows, in event_fingerprints under the customer id: they go too.
    assert deleted == {
        "raw_events": 2,
        "customer_scores": 1,
        "quarantined_events": 2,
        "event_fingerprints": 1,
    }
    for table in ("raw_events", "quarantined_events", "customer_scores", "event_fingerprints"):
        assert con.execute(f"select count(*) from {table} where customer_id = 'C1'").fetchall() == [
            (0,)
        ]
    assert con.execute(
        "select count(*) from quarantined_events where raw_line like '%C1%'"
    ).fetchall() == [(0,)]
    # The erasure list holds only a hash.
    assert con.execute("select customer_hash from erased_customers").fetchall() == [
        (pseudonymise("C1", KEY),)
    ]
    result = ingest_events(con, path, run_id="r2", pseudonym_key=KEY)
    assert result.rows_erased == 4
    assert result.rows_read == result.rows_used + result.rows_quarantined + result.rows_erased == 6
    assert con.execute("select count(*) from raw_events where customer_id = 'C1'").fetchall() == [
        (0,)
    ]
    assert con.execute("select count(*) from quarantined_events").fetchall() == [(1,)]


def test_opt_outs_are_replaced_not_appended(con):
    assert replace_opt_outs(con, ["C1", "C2", "C1"], KEY) == 2
    assert replace_opt_outs(con, ["C3"], KEY) == 1
    hashes = {r[0] for r in con.execute("select customer_hash from opted_out_customers").fetchall()}
    assert hashes == {pseudonymise("C3", KEY)}


def test_artifact_scan_matches_whole_ids_only(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "a.csv").write_text("segment,n\nS1,17850\n")
    (tmp_path / "run" / "b.txt").write_text("customer 1785 bought\n")
    assert artifacts_mentioning(tmp_path, ["1785"]) == [tmp_path / "run" / "b.txt"]
