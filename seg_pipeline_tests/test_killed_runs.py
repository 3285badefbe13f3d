"""Runs killed at five points leave the published tables intact, and the rerun succeeds.

Its own file (apart from ``test_reliability.py``): the longest test of the suite, so that the
test workers, which take a file each, can run it beside the others.
"""

import os
import signal
import subprocess
import sys

import duckdb

from seg_pipeline.lib.contract import CONTRACT_TABLES


def _cli(args, env, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "seg_pipeline.cli", *args],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        **kwargs,
    )


def _published_run(path):
    con = duckdb.connect(str(path), read_only=True)
    runs = con.execute("select distinct run_id from publication").fetchall()
    counts = {
        t: con.execute(f"select count(*), coalesce(list(distinct run_id), []) from {t}").fetchall()[
            0
        ]
        for t in CONTRACT_TABLES
    }
    con.close()
    return runs, counts


KILL_POINTS = [
    "ingested_events",
    "dbt_models",
    "behavioural_segments",
    "recommendations",
    "published_database",
]


def test_killed_runs_leave_the_published_tables_intact_and_the_rerun_succeeds(
    tmp_path, small_shop_files
):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    database = tmp_path / "pub.duckdb"
    args = [
        "run",
        "--events",
        str(small_shop_files["events"]),
        "--items",
        str(small_shop_files["items"]),
        "--database",
        str(database),
    ]
    assert _cli(args, env).wait(timeout=600) == 0
    runs, counts = _published_run(database)
    assert len(runs) == 1
    for step in KILL_POINTS:
        proc = _cli(args, env)
        for line in proc.stderr:
            if line.strip() == f"… {step}":
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=120)
        assert proc.returncode == -signal.SIGKILL, f"the run ended before {step}"
        now_runs, now_counts = _published_run(database)
        if step == "published_database" and now_runs != runs:
            # Killed after the atomic rename: the new run is published whole.
            assert all(c[1] == [now_runs[0][0]] for c in now_counts.values() if c[0])
            runs, counts = now_runs, now_counts
        assert now_runs == runs, step
        assert now_counts == counts, step
    assert _cli(args, env).wait(timeout=600) == 0
    final_runs, final_counts = _published_run(database)
    assert final_runs != runs
    # Every table with rows is from the last run (tables a shop may publish empty have none).
    assert all(c[1] == [final_runs[0][0]] for c in final_counts.values() if c[0])
    assert {t: c[0] for t, c in final_counts.items()} == {t: c[0] for t, c in counts.items()}
