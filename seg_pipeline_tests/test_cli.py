"""The seg-pipeline command as a user runs it: a subprocess, with its exit code and stderr."""

import gzip
import json
import os
import re
import subprocess
import sys
import time

import duckdb
import pytest

from seg_pipeline_tests.conftest import SHARED_DATASET


def _run(args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "seg_pipeline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_the_spark_engine_without_an_endpoint_fails_in_one_line_naming_it(tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("customer_id,item_id,event_ts\nc1,i1,2025-01-01\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "SEG_ENGINE")}
    proc = _run(
        [
            "run",
            "--engine",
            "spark",
            "--events",
            str(events),
            "--database",
            str(tmp_path / "pub.duckdb"),
            "--quiet",
        ],
        tmp_path,
        env,
    )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "SPARK_REMOTE" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_a_spark_server_setting_without_a_value_is_refused_before_anything_starts(tmp_path, capsys):
    from seg_pipeline.cli import spark_server

    state = tmp_path / "spark"
    assert spark_server("start", str(state), 15099, "1g", ["spark.sql.codegen.wholeStage"]) == 2
    assert "--conf takes KEY=VALUE" in capsys.readouterr().err
    assert not state.exists()


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
    # The summary: counts that add up, the choices made, and where to look next.
    summary = proc.stderr[proc.stderr.index("seg-pipeline: done in") :]
    counts = re.search(r"rows: ([\d,]+) read = ([\d,]+) used \+ ([\d,]+) quarantined", summary)
    read, kept, dropped = (int(g.replace(",", "")) for g in counts.groups())
    assert read == kept + dropped == 40_000 and dropped == quarantined
    assert "non_product" in summary
    assert f"customers: {used:,} with a purchase" in summary
    assert "segments: " in summary and "125 RFM cells" in summary
    assert "refitted: no stored segments to keep" in summary
    assert "recommendations: " in summary and "against popularity" in summary
    assert "segment report: " in summary and "mlflow ui --backend-store-uri" in summary
    # The CLI parsed the dbt project for this run while it imported the pipeline, and the dbt
    # step read that parse instead of parsing again.
    dbt_log = (tmp_path / "pub_work_dbt_target" / "dbt.log").read_text()
    assert "Nothing changed, skipping partial parsing" in dbt_log


def test_a_second_run_on_the_same_database_refuses_at_once_naming_the_first(
    tmp_path, small_shop_files
):
    database = tmp_path / "pub.duckdb"
    args = ["run", "--events", str(small_shop_files["events"]), "--database", str(database)]
    first = subprocess.Popen(
        [sys.executable, "-m", "seg_pipeline.cli", *args, "--quiet"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    lock = tmp_path / "pub.lock"
    for _ in range(600):
        if lock.exists() and lock.read_text():
            break
        time.sleep(0.1)
    holder = json.loads(lock.read_text())
    second = _run([*args, "--quiet"], tmp_path)
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert f"run {holder['run_id']}" in second.stderr
    assert "is working on pub.duckdb" in second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()
    con = duckdb.connect(str(database), read_only=True)
    runs = con.execute("select distinct run_id from publication").fetchall()
    con.close()
    assert runs == [(holder["run_id"],)]
    assert lock.read_text() == ""  # released, and nothing stale left to block the next night
