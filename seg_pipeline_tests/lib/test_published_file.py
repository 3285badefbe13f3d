import subprocess
import sys

import duckdb
import pytest

from seg_pipeline.lib.published_file import check_identifier, publish_tables


def _work(tmp_path, value):
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    con.execute(
        "create or replace table a as select range as x, $v as run_id from range(5)", {"v": value}
    )
    con.execute("create or replace table b as select 1 as y, $v as run_id", {"v": value})
    return con


def test_publish_replaces_the_file_and_records_the_run(tmp_path):
    published = tmp_path / "out" / "pub.duckdb"
    con = _work(tmp_path, "run1")
    counts = publish_tables(con, published, ["a", "b"], run_id="run1")
    assert counts == {"a": 5, "b": 1}
    reader = duckdb.connect(str(published), read_only=True)
    assert reader.execute("select distinct run_id from publication").fetchall() == [("run1",)]
    assert reader.execute("select count(*) from a").fetchall() == [(5,)]
    reader.close()
    assert [p.name for p in published.parent.iterdir()] == ["pub.duckdb"]  # no temp file left


def test_a_reader_that_holds_the_old_file_keeps_a_consistent_view(tmp_path):
    published = tmp_path / "pub.duckdb"
    con = _work(tmp_path, "run1")
    publish_tables(con, published, ["a", "b"], run_id="run1")
    reader = duckdb.connect(str(published), read_only=True)
    con.execute("create or replace table a as select range as x, 'run2' as run_id from range(7)")
    con.execute("update b set run_id = 'run2'")
    publish_tables(con, published, ["a", "b"], run_id="run2")
    # The open reader still sees run1 everywhere; a new reader sees run2 everywhere.
    assert reader.execute(
        "select distinct run_id from a union select run_id from b"
    ).fetchall() == [("run1",)]
    # A new reader is another process (DuckDB caches open databases per process).
    code = (
        f"import duckdb; c = duckdb.connect({str(published)!r}, read_only=True); "
        "print(c.execute('select count(*), any_value(run_id) from a').fetchall())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[(7, 'run2')]"


def test_failed_publish_keeps_the_previous_file(tmp_path):
    published = tmp_path / "pub.duckdb"
    con = _work(tmp_path, "run1")
    publish_tables(con, published, ["a"], run_id="run1")
    with pytest.raises(duckdb.Error):
        publish_tables(con, published, ["a", "missing_table"], run_id="run2")
    reader = duckdb.connect(str(published), read_only=True)
    assert reader.execute("select distinct run_id from publication").fetchall() == [("run1",)]
    assert len(list(tmp_path.glob(".pub.duckdb.*"))) == 0


@pytest.mark.parametrize("name", ["a; drop table x", "A", "1abc", "a.b", ""])
def test_table_names_are_validated(name):
    with pytest.raises(ValueError):
        check_identifier(name)
