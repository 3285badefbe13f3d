"""The seg-pipeline command as a user runs it: a subprocess, with its exit code and stderr."""

import gzip
import subprocess
import sys

import duckdb
import pytest

from seg_pipeline_tests.conftest import SHARED_DATASET


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "seg_pipeline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_bad_input_exits_non_zero_with_one_readable_line(tmp_path):
    bad = tmp_path / "events.csv"
    bad.write_text("customer_id,event_ts\nc1,2025-01-01\n")
    proc = _run(
        ["run", "--events", str(bad), "--database", str(tmp_path / "pub.duckdb"), "--quiet"],
        tmp_path,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "ingested_events" in lines[0] and "missing required column(s) item_id" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "pub.duckdb").exists()


@pytest.mark.skipif(not SHARED_DATASET.exists(), reason="shared Online Retail data set not present")
def test_online_retail_sample_runs_end_to_end(tmp_path):
    with gzip.open(SHARED_DATASET, "rt") as src:
        lines = [next(src) for _ in range(40_001)]
    sample = tmp_path / "retail.csv"
    sample.write_text("".join(lines))
    database = tmp_path / "pub.duckdb"
    proc = _run(
        ["run", "--events", str(sample), "--format", "online_retail", "--database", str(database)],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "✓ dbt_models" in proc.stderr
    con = duckdb.connect(str(database), read_only=True)
    used, quarantined = con.execute(
        "select (select count(*) from customer_rfm), (select count(*) from quarantined_events)"
    ).fetchall()[0]
    assert used > 100
    assert quarantined > 0  # the sample has postage lines and duplicates
    reasons = {
        r[0] for r in con.execute("select distinct reason from quarantined_events").fetchall()
    }
    assert "non_product" in reasons
    # The CLI parsed the dbt project for this run while it imported the pipeline, and the dbt
    # step read that parse instead of parsing again.
    dbt_log = (tmp_path / "pub_work_dbt_target" / "dbt.log").read_text()
    assert "Nothing changed, skipping partial parsing" in dbt_log
