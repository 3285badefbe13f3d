"""Scale benchmark: the whole nightly job on N synthetic events, beside a minimal script.

    python bench/scale.py --events 1000000
    python bench/scale.py --events 10000000 --skip-minimal
    python bench/scale.py --events 1000000 --engine spark --skip-minimal
    python bench/scale.py --engine spark --input ../shared/datasets/online_retail.csv.gz \
        --format online_retail

It generates a seeded synthetic shop of N events (Parquet; power-law items, customers and
activity over a year; about N/10 customers and up to 50k items), runs ``seg-pipeline run`` on it
in a child process and prints the wall time of every step, the total and the peak RSS. In the same
invocation it runs the minimal hand-written script the scale issue describes (DuckDB RFM,
scikit-learn K-Means, implicit ALS with 64 factors and 10 iterations, top-10 for every customer)
and prints the ratio of the two.

With ``--engine spark`` it starts a local Spark Connect server (``local[2]``) of its own, runs the
job on the Spark engine and, in the same invocation, on the DuckDB engine, and prints both per
step with the peak RSS of the driver (the ``seg-pipeline`` process) and of the Connect server,
then compares what both engines published: each customer's segment, name and reason, the
segment profiles, and the validation figures of the champion and of each ALS candidate.
``--input`` runs a given events file (``--format online_retail`` for the UCI file) instead of a
generated shop.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg_pipeline.lib.synthetic import generate_shop  # noqa: E402

MINIMAL = textwrap.dedent(
    """
    import sys, time
    import duckdb, numpy as np, scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    path = sys.argv[1]
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    con.execute(f"create table e as select * from read_parquet('{path}') where customer_id <> ''")
    rfm = con.execute('''
        select customer_id,
               date_diff('day', max(event_ts)::date, (select max(event_ts)::date + 1 from e)) r,
               count(distinct order_id) f, sum(quantity * unit_price) m
        from e where event_type = 'purchase' group by 1''').fetchnumpy()
    x = np.column_stack([rfm['r'], rfm['f'], np.clip(rfm['m'], 0, None)])
    x = StandardScaler().fit_transform(np.log1p(x))
    KMeans(n_clusters=8, n_init=1, random_state=0).fit(x)
    t1 = time.perf_counter()
    pairs = con.execute('''
        select dense_rank() over (order by customer_id) - 1 as u,
               dense_rank() over (order by item_id) - 1 as i, count(*)::float as w
        from e group by customer_id, item_id''').fetchnumpy()
    m = sp.csr_matrix((pairs['w'], (pairs['u'], pairs['i'])))
    with threadpool_limits(1, 'blas'):
        model = AlternatingLeastSquares(factors=64, iterations=10, random_state=0)
        model.fit(m, show_progress=False)
    t2 = time.perf_counter()
    for start in range(0, m.shape[0], 20000):
        users = np.arange(start, min(start + 20000, m.shape[0]))
        model.recommend(users, m[users], N=10, filter_already_liked_items=True)
    t3 = time.perf_counter()
    print(f"minimal: rfm+kmeans {t1 - t0:.1f} s, als {t2 - t1:.1f} s, scoring {t3 - t2:.1f} s, "
          f"total {t3 - t0:.1f} s, {m.shape[0]:,} customers x {m.shape[1]:,} items")
    """
)


def make_events(n_events: int, out: Path, seed: int = 7) -> Path:
    """Write exactly ``n_events`` synthetic events as Parquet (and the items as CSV)."""
    path = out / f"events_{n_events}.parquet"
    if path.exists():
        return path
    n_customers = max(300, n_events // 10)
    n_items = int(min(50_000, max(320, n_events // 200)))
    shop = generate_shop(n_customers, n_items, seed=seed, views_per_line=0.3)
    events = shop.events
    if len(events) > n_events:
        keep = np.sort(np.random.default_rng(seed).choice(len(events), n_events, replace=False))
        events = events.iloc[keep]
    events.to_parquet(path, index=False)
    shop.items.to_csv(out / f"items_{n_events}.csv", index=False)
    print(
        f"generated {len(events):,} events, {events['customer_id'].nunique():,} customers, "
        f"{events['item_id'].nunique():,} items -> {path}"
    )
    return path


def timed(args: list[str], env: dict) -> tuple[float, float, str, str]:
    """Run a command under /usr/bin/time; return wall seconds, peak RSS MB, stdout, stderr."""
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "TIME %e %M", *args], env=env, capture_output=True, text=True
    )
    match = re.search(r"TIME ([\d.]+) (\d+)", proc.stderr)
    if proc.returncode != 0 or not match:
        raise SystemExit(
            f"command failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}"
        )
    return float(match.group(1)), int(match.group(2)) / 1024, proc.stdout, proc.stderr


def clear_outputs(out: Path, stem: str) -> Path:
    """Remove an earlier run's databases, logs and dbt folder; return the database path."""
    # "{stem}." and "{stem}_", not "{stem}*": published_1000000* also matched the 10M files.
    for stale in [*out.glob(f"{stem}.*"), *out.glob(f"{stem}_*")]:
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return out / f"{stem}.duckdb"


def run_job(
    events: str,
    items: Path | None,
    database: Path,
    env: dict,
    engine: str = "duckdb",
    fmt: str = "canonical",
) -> tuple[float, float, dict]:
    """``seg-pipeline run`` under /usr/bin/time: wall seconds, peak RSS MB, seconds per step.
    Prints the run's summary lines (rows, segments, champion)."""
    wall, rss, _, err = timed(
        [
            sys.executable,
            "-m",
            "seg_pipeline.cli",
            "run",
            "--events",
            events,
            *(["--items", str(items)] if items else []),
            "--format",
            fmt,
            "--database",
            str(database),
            "--engine",
            engine,
        ],
        env,
    )
    summary = [
        ln for ln in err.splitlines() if re.match(r"\s+(rows|customers|segments|recomm)", ln)
    ]
    print(f"{engine}:", *summary, sep="\n")
    return wall, rss, {s: float(t) for s, t in re.findall(r"✓ (\S+) \(([\d.]+) s\)", err)}


def server_peak_mb(state: Path) -> float | None:
    """Peak RSS (VmHWM) of the Connect server started in ``state``, while it still runs."""
    for pid_file in state.glob("*SparkConnectServer*.pid"):
        status = Path(f"/proc/{pid_file.read_text().strip()}/status")
        if status.exists():
            match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
            if match:
                return int(match.group(1)) / 1024
    return None


# What both engines must publish alike: the columns compared, by table and key.
COMPARED = {
    "customer_segments": (["customer_id"], ["segment_id", "segment_name", "reason"]),
    "segment_profiles": (["segment_id"], ["segment_name", "n_customers", "description"]),
}
VALIDATION = (
    "select model, params, round(ndcg, 4) as ndcg, is_champion from recommendation_metrics "
    "where segment = 'all' and (is_champion or model like '%als') order by ndcg desc"
)


def published_frames(read) -> dict:
    """The compared columns of the published tables, and the champion's and ALS candidates'
    validation NDCG, through ``read(sql) -> pandas.DataFrame``."""
    frames = {
        table: read(f"select {', '.join(key + cols)} from {table}").sort_values(key)
        for table, (key, cols) in COMPARED.items()
    }
    frames["validation"] = read(VALIDATION)
    return frames


def compare_published(spark: dict, duck: dict) -> None:
    """Print how many rows of each compared table agree value for value."""
    for table, (key, cols) in COMPARED.items():
        both = spark[table].merge(duck[table], on=key, how="outer", suffixes=("_s", "_d"))
        same = {
            c: int((both[f"{c}_s"].astype(str) == both[f"{c}_d"].astype(str)).sum()) for c in cols
        }
        print(
            f"{table}: rows spark {len(spark[table]):,} duckdb {len(duck[table]):,}; "
            f"equal values per column {same}"
        )
    for name, frame in (("spark", spark["validation"]), ("duckdb", duck["validation"])):
        print(f"{name} validation NDCG@10 (champion and ALS candidates):")
        print(textwrap.indent(frame.to_string(index=False), "  "))


def run_name(args) -> int | str:
    """What names this invocation's outputs: the event count, or the input file's stem."""
    return Path(args.input).name.split(".")[0] if args.input else args.events


def compare_engines(args, out: Path, events: Path, env: dict) -> None:
    """The job on the Spark engine (a fresh local Connect server) and on DuckDB, per step."""
    import duckdb

    from seg_pipeline.lib.spark.server import start_server, stop_server

    name = run_name(args)
    state = out / f"spark_state_{name}"
    shutil.rmtree(state, ignore_errors=True)
    started = time.perf_counter()
    remote = start_server(state, port=15022, driver_memory=args.spark_memory)
    print(f"Connect server start-up: {time.perf_counter() - started:.1f} s ({remote})")
    items = None if args.input else out / f"items_{args.events}.csv"
    try:
        spark_env = {**env, "SPARK_REMOTE": remote, "SEG_SPARK_STAGING": str(state / "staging")}
        runs = {
            "spark": run_job(
                str(events),
                items,
                clear_outputs(out, f"spark_{name}"),
                spark_env,
                "spark",
                args.format,
            )
        }
        server_mb = server_peak_mb(state)
        from pyspark.sql import SparkSession

        session = SparkSession.builder.remote(remote).getOrCreate()
        session.sql("use seg_pipeline")
        on_spark = published_frames(lambda sql: session.sql(sql).toPandas())
        session.stop()
    finally:
        stop_server(state)
    database = clear_outputs(out, f"published_{name}")
    runs["duckdb"] = run_job(str(events), items, database, env, "duckdb", args.format)
    con = duckdb.connect(str(database), read_only=True)
    on_duckdb = published_frames(lambda sql: con.execute(sql).fetchdf())
    con.close()
    steps = sorted(
        set(runs["spark"][2]) | set(runs["duckdb"][2]), key=lambda s: -runs["spark"][2].get(s, 0)
    )
    label = f"{name:,} events" if isinstance(name, int) else name
    print(f"\n{label}: seconds per step   {'spark':>8s} {'duckdb':>8s}")
    for step in steps:
        s, d = runs["spark"][2].get(step, 0.0), runs["duckdb"][2].get(step, 0.0)
        if max(s, d) >= 0.05:
            print(f"  {step:60s} {s:8.1f} {d:8.1f}")
    for name, (wall, rss, _) in runs.items():
        print(f"{name}: total wall {wall:.1f} s, driver peak RSS {rss:,.0f} MB")
    if server_mb is not None:
        print(f"spark: Connect server peak RSS {server_mb:,.0f} MB")
    print(f"ratio spark / duckdb: {runs['spark'][0] / runs['duckdb'][0]:.2f}")
    compare_published(on_spark, on_duckdb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "scale"))
    parser.add_argument("--skip-minimal", action="store_true")
    parser.add_argument(
        "--engine",
        choices=["duckdb", "spark"],
        default="duckdb",
        help="spark: run the Spark engine and the DuckDB engine, side by side",
    )
    parser.add_argument("--spark-memory", default="8g", help="the local Connect server's heap")
    parser.add_argument("--input", help="an events file to run instead of a generated shop")
    parser.add_argument("--format", default="canonical", choices=["canonical", "online_retail"])
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.input:
        if args.engine != "spark":
            parser.error("--input compares the two engines: give --engine spark")
        events = Path(args.input).resolve()
    else:
        started = time.perf_counter()
        events = make_events(args.events, out)
        print(f"data generation: {time.perf_counter() - started:.1f} s (not counted below)")

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{out / f'mlflow_{run_name(args)}.db'}",
    }
    if args.engine == "spark":
        compare_engines(args, out, events, env)
        return
    database = clear_outputs(out, f"published_{args.events}")
    wall, rss, steps = run_job(str(events), out / f"items_{args.events}.csv", database, env)
    print(f"\npipeline, {args.events:,} events: per step (s)")
    for step, seconds in sorted(steps.items(), key=lambda s: -s[1]):
        if seconds >= 0.05:
            print(f"  {step:60s} {seconds:7.1f}")
    print(f"  {'sum of steps':60s} {sum(steps.values()):7.1f}")
    log = database.with_name(f"{database.stem}_last_run.log")
    for asset, phases in re.findall(r"(\w+): seconds by phase (\{.*\})", log.read_text()):
        print(f"  {asset} by phase: {phases}")
    for asset, cores in re.findall(r"(\w+): cores busy by phase (\{.*\})", log.read_text()):
        print(f"  {asset} cores busy by phase: {cores}")
    outside = wall - sum(steps.values())
    print(
        f"pipeline total wall {wall:.1f} s ({outside:.1f} s of it outside the steps: start-up, "
        f"imports, dbt manifest), peak RSS {rss:,.0f} MB"
    )

    if not args.skip_minimal:
        m_wall, m_rss, m_out, _ = timed([sys.executable, "-c", MINIMAL, str(events)], env)
        print(f"\n{m_out.strip()}")
        print(f"minimal script total wall {m_wall:.1f} s, peak RSS {m_rss:,.0f} MB")
        print(f"\nratio pipeline / minimal: {wall / m_wall:.2f}")


if __name__ == "__main__":
    main()
