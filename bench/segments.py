"""Segments that forecast and stay put: forecast power, value calibration and stability.

    python bench/segments.py                      # Online Retail, nights from 2011-09-01
    python bench/segments.py --events synthetic   # the embedded demo shop

Runs ``seg-pipeline run`` on one database at ``--as-of`` D, D+1 and D+7 (the same events, so
nothing but time and one week of purchases changes). Per night it prints the segmentation step's
time, the refit decision, the chosen segments' eta² and omega² of next-period spend beside the
named RFM segments' and the 125 RFM cells', and the value forecast's out-of-fold calibration.
Then, from ``segment_history``, for the customers who bought nothing after D (their features
changed only because time passed): the share who kept their behavioural segment and their named
RFM segment from D to D+1 (day over day) and from D to D+7 (week over week).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
ONLINE_RETAIL = ROOT.parent / "shared" / "datasets" / "online_retail.csv.gz"


def run_night(args: argparse.Namespace, database: Path, as_of: dt.date, env: dict) -> dict:
    """One ``seg-pipeline run``; its wall time and the segmentation step's seconds."""
    command = [sys.executable, "-m", "seg_pipeline.cli"]
    if args.events == "synthetic":
        command += ["demo", "--database", str(database), "--as-of", as_of.isoformat()]
    else:
        command += ["run", "--events", args.events, "--format", args.format]
        command += ["--database", str(database), "--as-of", as_of.isoformat()]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"night {as_of} failed:\n{done.stderr[-3000:]}")
    steps = {s: float(t) for s, t in re.findall(r"✓ (\S+) \(([\d.]+) s\)", done.stderr)}
    return {"wall": wall, "segmentation": steps.get("behavioural_segments")}


def stability(work: duckdb.DuckDBPyConnection, first: dt.date, later: dt.date) -> dict:
    """Shares of the customers with no purchase after ``first`` who kept their segments."""
    row = work.execute(
        """
        with a as (select * from segment_history where as_of = $first),
             b as (select * from segment_history where as_of = $later),
             quiet as (
                 select customer_id from customer_features
                 where snapshot = 'current'
                   and cast($later as date) - cast(recency_days as integer) < cast($first as date)
             )
        select count(*),
               avg(case when a.segment_id = b.segment_id then 1.0 else 0.0 end),
               avg(case when a.segment_name = b.segment_name then 1.0 else 0.0 end),
               avg(case when a.rfm_segment = b.rfm_segment then 1.0 else 0.0 end)
        from a join b using (customer_id) join quiet using (customer_id)
        """,
        {"first": first, "later": later},
    ).fetchall()[0]
    return dict(zip(("customers", "segment_id", "segment_name", "rfm_segment"), row, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", default=str(ONLINE_RETAIL), help="a path, or 'synthetic'")
    parser.add_argument("--format", default="online_retail")
    parser.add_argument("--as-of", default=None, help="first night (default 2011-09-01 for OR)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "segments"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*"):
        if stale.is_file():
            stale.unlink()
    database = out / "published.duckdb"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",
        "DAGSTER_HOME": str(out / "dagster_home"),
    }
    first = dt.date.fromisoformat(
        args.as_of or ("2011-09-01" if args.events != "synthetic" else "2025-11-01")
    )
    nights = [first, first + dt.timedelta(days=1), first + dt.timedelta(days=7)]
    print(f"events {args.events}; nights {', '.join(map(str, nights))}")
    for night in nights:
        timing = run_night(args, database, night, env)
        with duckdb.connect(str(out / "published_work.duckdb"), read_only=True) as work:
            run = work.execute(
                "select method, param, n_segments, forecast_eta2, forecast_omega2, "
                "rfm_segment_eta2, rfm_segment_omega2, rfm_cell_eta2, rfm_cell_omega2, decision "
                "from segmentation_runs where as_of = $d",
                {"d": night},
            ).fetchall()[0]
            ratio, bias, rate = work.execute(
                "select sum(customers * predicted_spend) / sum(customers * actual_spend), "
                "sum(customers * (predicted_buy_rate - actual_buy_rate)) / sum(customers), "
                "sum(customers * actual_buy_rate) / sum(customers) "
                "from value_forecast_calibration"
            ).fetchall()[0]
        print(
            f"  {night}: wall {timing['wall']:.1f} s, segmentation step "
            f"{timing['segmentation']} s; {run[0]} {run[1]}, {run[2]} segments; {run[9]}\n"
            f"      next-period spend eta2/omega2: segments {run[3]:.3f}/{run[4]:.3f}, "
            f"named RFM segments {run[5]:.3f}/{run[6]:.3f}, 125 RFM cells {run[7]:.3f}/{run[8]:.3f}"
            f"\n      value forecast (out of fold): predicted/actual spend {ratio:.2f}, "
            f"buying rate {rate:.1%} (mean predicted minus actual {bias:+.3f})"
        )
    with duckdb.connect(str(out / "published_work.duckdb"), read_only=True) as work:
        for label, later in (("day over day", nights[1]), ("week over week", nights[2])):
            s = stability(work, first, later)
            print(
                f"{label:>15}: {s['customers']:,} customers without a purchase after {first}; "
                f"kept segment {s['segment_id']:.1%} (name {s['segment_name']:.1%}), "
                f"kept named RFM segment {s['rfm_segment']:.1%}"
            )


if __name__ == "__main__":
    main()
