"""Nightly runs on daily files: the first run reads every day, the next night one new day.

    python bench/incremental.py --events 1000000

It splits the scale benchmark's synthetic events (``bench/scale.py`` makes them) into one
Parquet file per day, runs ``seg-pipeline run`` on all days but the last, adds the last day and
runs again on the same database, and prints the steps of both runs side by side with the files
each ingest read. The second night should read one file, and the recommendations re-score only
the customers whose history changed, with the model kept from the first night; dbt and the
segmentation still rebuild.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import clear_outputs, make_events, run_job  # noqa: E402


def split_by_day(events: Path, folder: Path) -> list[Path]:
    """One Parquet file per event date, named so that the files sort by date."""
    folder.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    days = [
        d
        for (d,) in con.execute(
            "select distinct strftime(event_ts::timestamp, '%Y-%m-%d') from read_parquet($p) "
            "order by 1",
            {"p": str(events)},
        ).fetchall()
        if d is not None
    ]
    con.execute(
        f"copy (select *, strftime(event_ts::timestamp, '%Y-%m-%d') as day "
        f"from read_parquet('{events}') where event_ts is not null) "
        f"to '{folder}' (format parquet, partition_by (day), overwrite_or_ignore)"
    )
    files = []
    for d in days:
        part = folder / f"day={d}"
        dst = folder / f"events_{d}.parquet"
        next(part.glob("*.parquet")).rename(dst)
        part.rmdir()
        files.append(dst)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "incremental"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    events = make_events(args.events, ROOT / "bench" / "out" / "scale")
    days = split_by_day(events, out / f"all_{args.events}")
    nightly = out / f"nightly_{args.events}"
    nightly.mkdir(exist_ok=True)
    for stale in nightly.glob("*"):
        stale.unlink()
    database = clear_outputs(out, f"published_{args.events}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    items = ROOT / "bench" / "out" / "scale" / f"items_{args.events}.csv"
    runs = []
    for night, batch in (("first night", days[:-1]), ("next night", days[-1:])):
        for path in batch:
            os.link(path, nightly / path.name)
        wall, rss, steps = run_job(str(nightly / "*.parquet"), items, database, env)
        work = duckdb.connect(
            str(database.with_name(f"{database.stem}_work.duckdb")), read_only=True
        )
        read = work.execute("select len(files_read_this_run) from ingest_manifest").fetchall()[0][0]
        work.close()
        runs.append((night, wall, rss, read, steps))
        print(
            f"{night}: {wall:.1f} s wall, peak RSS {rss:,.0f} MB, ingest read {read} of "
            f"{len(list(nightly.glob('*.parquet')))} daily files"
        )
        log = database.with_name(f"{database.stem}_last_run.log").read_text()
        for line in re.findall(r"(refitting the recommender.*|recommendations: .*)", log):
            print(f"  {line}")
    names = [s for s in runs[0][4] if runs[0][4][s] >= 0.5]
    print(f"\n{'step':45s} {'first night':>12s} {'next night':>12s}")
    for s in names:
        print(f"{s:45s} {runs[0][4][s]:12.1f} {runs[1][4].get(s, 0):12.1f}")


if __name__ == "__main__":
    main()
