"""Offline benchmark of the recommenders on a time split, end to end through the pipeline.

For each data set the pipeline runs as a user would on the split date (``seg-pipeline run
--as-of SPLIT``): it sees only the history before the split, picks its champion on its own
validation window, and publishes ``customer_recommendations``. The benchmark then scores those
published lists on the purchases after the split, counting only items new to each customer, and
in the same run fits every candidate and implicit's README-style ALS (BM25 weighting, 64
factors) on the same history for comparison, and prints the published figure against the best
EASE and RP3beta setting on the test window (an optimistic peer).

    python bench/recommendations.py                      # synthetic shop and Online Retail
    python bench/recommendations.py --datasets synthetic
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.scale import clear_outputs  # noqa: E402
from seg_pipeline.lib.ingest import ingest_events  # noqa: E402
from seg_pipeline.lib.recommendations import audiences as aud  # noqa: E402
from seg_pipeline.lib.recommendations.evaluation import default_grid, evaluate  # noqa: E402
from seg_pipeline.lib.recommendations.factor_models import ALSRecommender  # noqa: E402
from seg_pipeline.lib.recommendations.interactions import (  # noqa: E402
    load_heldout_purchases,
    load_interactions,
)
from seg_pipeline.lib.recommendations.item_models import (  # noqa: E402
    EASERecommender,
    RP3BetaRecommender,
)
from seg_pipeline.lib.recommendations.metrics import beyond_accuracy, ranking_metrics  # noqa: E402
from seg_pipeline.lib.recommendations.popularity import PopularityRecommender  # noqa: E402
from seg_pipeline.lib.synthetic import generate_shop, write_shop  # noqa: E402

ONLINE_RETAIL = ROOT.parent / "shared" / "datasets" / "online_retail.csv.gz"
K = 10
COLUMNS = [
    "candidate",
    "precision",
    "recall",
    "f1",
    "ndcg",
    "map",
    "hit_rate",
    "mrr",
    "coverage",
    "diversity",
    "novelty",
    "fit_seconds",
    "peak_mb",
]


def _datasets(out: Path, names: list[str]) -> list[dict]:
    sets = []
    if "synthetic" in names:
        files = write_shop(generate_shop(), out / "synthetic" / "input")
        sets.append(
            {
                "name": "synthetic",
                "events": files["events"],
                "items": files["items"],
                "format": "canonical",
                "split": date(2025, 11, 1),
            }
        )
    if "online_retail" in names:
        if ONLINE_RETAIL.exists():
            sets.append(
                {
                    "name": "online_retail",
                    "events": ONLINE_RETAIL,
                    "items": None,
                    "format": "online_retail",
                    "split": date(2011, 9, 1),
                }
            )
        else:
            print(f"skipping online_retail: {ONLINE_RETAIL} not found")
    return sets


def _run_pipeline(ds: dict, workdir: Path) -> tuple[float, float, Path]:
    """Run `seg-pipeline run --as-of SPLIT` in a child process; return wall s, peak RSS MB, db."""
    database = clear_outputs(workdir, "published")
    args = [
        sys.executable,
        "-m",
        "seg_pipeline.cli",
        "run",
        "--events",
        str(ds["events"]),
        "--format",
        ds["format"],
        "--as-of",
        ds["split"].isoformat(),
        "--database",
        str(database),
        "--quiet",
    ]
    if ds["items"]:
        args += ["--items", str(ds["items"])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"pipeline failed on {ds['name']}: {proc.stderr.strip()}")
    return wall, max(peak, before) / 1024, database


def _truth(ds: dict, workdir: Path, train) -> object:
    """Held-out purchases after the split of items new to each customer, as a CSR on `train`."""
    con = duckdb.connect(str(workdir / "truth.duckdb"))
    ingest_events(con, ds["events"], fmt=ds["format"], run_id="bench", max_bad_share=0.9)
    con.execute(
        """
        create or replace table int_customer_item_daily as
        select customer_id, item_id, event_ts::date as event_date,
               count(distinct order_id) filter (where event_type = 'purchase') as n_orders
        from raw_events where customer_id is not null group by all
        """
    )
    relevant = load_heldout_purchases(con, train, ds["split"])
    con.close()
    return relevant


def _published_recs(database: Path, train) -> np.ndarray:
    con = duckdb.connect(str(database), read_only=True)
    frame = con.execute("select customer_id, rank, item_id from customer_recommendations").df()
    con.close()
    recs = np.full((train.shape[0], K), -1, dtype=np.int64)
    u = np.searchsorted(train.user_ids, frame["customer_id"].to_numpy(dtype=object))
    i = np.searchsorted(train.item_ids, frame["item_id"].to_numpy(dtype=object))
    ok = (frame["rank"].to_numpy() <= K) & (u < train.shape[0]) & (i < train.shape[1])
    recs[u[ok], frame["rank"].to_numpy()[ok] - 1] = i[ok]
    return recs


def bench(ds: dict, out: Path) -> pd.DataFrame:
    workdir = out / ds["name"]
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"\n== {ds['name']}: split at {ds['split']}, scored on items new to each customer")
    wall, rss, database = _run_pipeline(ds, workdir)
    print(
        f"pipeline (seg-pipeline run --as-of {ds['split']}): {wall:.1f} s wall, "
        f"peak RSS {rss:,.0f} MB"
    )
    work = duckdb.connect(str(workdir / "published_work.duckdb"), read_only=True)
    train = load_interactions(work)
    published = duckdb.connect(str(database), read_only=True)
    chosen = published.execute(
        "select candidate from recommendation_metrics where is_champion and segment = 'all'"
    ).fetchall()[0][0]
    published.close()
    work.close()
    relevant = _truth(ds, workdir, train)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    print(
        f"train: {train.shape[0]:,} customers × {train.shape[1]:,} items; "
        f"test: {len(users):,} customers with {relevant.nnz:,} new purchases"
    )

    popularity = np.asarray((train.weights > 0).sum(axis=0)).ravel() / train.shape[0]
    categories = train.item_categories
    recs = _published_recs(database, train)[users]
    rows = [
        {
            "candidate": f"PUBLISHED champion: {chosen}",
            **ranking_metrics(recs, relevant[users], K),
            **beyond_accuracy(recs, categories, popularity, K),
            "fit_seconds": np.nan,
            "peak_mb": np.nan,
        }
    ]

    readme = ALSRecommender(
        factors=64,
        regularization=0.01,
        alpha=1.0,
        iterations=15,
        bm25=True,
        name="implicit_readme_als",
    )
    tracemalloc.start()
    started = time.perf_counter()
    readme.fit(train)
    fit_seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    r = readme.recommend(users, train.purchased, K).items
    rows.append(
        {
            "candidate": "implicit README ALS (bm25, 64 factors)",
            **ranking_metrics(r, relevant[users], K),
            **beyond_accuracy(r, categories, popularity, K),
            "fit_seconds": fit_seconds,
            "peak_mb": peak,
        }
    )

    tracemalloc.start()
    evaluation = evaluate(default_grid(), train, relevant, k=K)
    grid_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    table = evaluation.table.assign(peak_mb=grid_peak)
    rows += table[COLUMNS].to_dict("records")
    # More settings of the strong simple peers than the nightly grid tries, for the optimistic
    # peer below (the popularity list is there because an evaluation needs its baseline).
    peers = [EASERecommender(l2=l2) for l2 in (10.0, 50.0, 250.0, 1000.0)] + [
        RP3BetaRecommender(alpha=alpha, beta=beta, k=200)
        for alpha in (0.5, 1.0)
        for beta in (0.0, 0.5, 0.7)
    ]
    extra = evaluate([PopularityRecommender(), *peers], train, relevant, k=K, hybrids=False)
    extra_rows = extra.table[extra.table["model"] != "popularity"].assign(peak_mb=np.nan)
    rows += extra_rows[COLUMNS].to_dict("records")
    frame = pd.DataFrame(rows)
    frame = frame[COLUMNS].rename(
        columns={m: f"{m}@{K}" for m in ("precision", "recall", "f1", "ndcg", "map", "hit_rate")}
    )
    print(frame.round(4).to_string(index=False))
    pub = frame.iloc[0][f"ndcg@{K}"]
    base = frame.loc[frame["candidate"] == "popularity(window_days=None)", f"ndcg@{K}"].iloc[0]
    best_pop = frame.loc[frame["candidate"].str.startswith("popularity("), f"ndcg@{K}"].max()
    als = frame.iloc[1][f"ndcg@{K}"]
    print(
        f"published NDCG@{K} {pub:.4f}: {pub / base:.2f}× popularity ({base:.4f}), "
        f"{pub / best_pop:.2f}× the best popularity window ({best_pop:.4f}), "
        f"{pub / als:.2f}× implicit README ALS ({als:.4f})"
    )
    # The strong simple peers at their best setting on the *test* window (the grid's and the extra
    # settings): an optimistic peer, since the pipeline chose its champion on its own validation
    # window before the split. The peers are the published algorithms; the grid's time-decayed
    # EASE is our extension, shown on its own line.
    for family, label in (("ease", "ease"), ("rp3beta", "rp3beta"), ("ease", "time-decayed ease")):
        decayed = frame["candidate"].str.contains("half_life_days")
        rows_of = frame[
            frame["candidate"].str.startswith(f"{family}(")
            & (decayed if label.startswith("time") else ~decayed)
        ]
        if len(rows_of):
            best = rows_of.sort_values(f"ndcg@{K}", ascending=False).iloc[0]
            print(
                f"published / best {label} on test ({best['candidate']}, "
                f"{best[f'ndcg@{K}']:.4f}): {pub / best[f'ndcg@{K}']:.2f}×"
            )
    print("(peak_mb: peak traced numpy/Python allocation of the fit; for the grid, of all of it)")
    _diversity(workdir)
    _audiences(database, train, relevant)
    return frame


def _diversity(workdir: Path) -> None:
    """The diversity trials the pipeline chose its MMR strength on (its validation window, from
    the champion_selection run in MLflow): the NDCG each strength cost and the diversity it
    bought."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recommendations")
    runs = client.search_runs(
        [experiment.experiment_id],
        "attributes.run_name = 'champion_selection'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        print("no champion_selection run: no diversity trials")
        return
    run = runs[0]
    path = client.download_artifacts(run.info.run_id, "evaluation/diversity.csv", str(workdir))
    trials = pd.read_csv(path)
    plain = trials.loc[trials["strength"] == 0, "ndcg"].iloc[0]
    trials["ndcg_cost"] = 1 - trials["ndcg"] / plain
    chosen = float(run.data.params.get("diversity_strength", "nan"))
    print(f"\ndiversity (MMR) on the pipeline's validation window; chosen strength {chosen:g}:")
    columns = ["strength", "ndcg", "ndcg_cost", "ild", "diversity", "coverage", "novelty"]
    print(trials[columns].round(4).to_string(index=False))


def _audiences(database: Path, train, relevant) -> None:
    """The published audiences scored on the test window (first purchases after the split),
    beside the baseline audience of the same size built on the same history, and the mode the
    pipeline chose on its own validation window."""
    con = duckdb.connect(str(database), read_only=True)
    tables = {
        "item": con.execute(
            "select item_id as g, rank, customer_id, model from item_audiences"
        ).df(),
        "category": con.execute(
            "select category as g, rank, customer_id, model from category_audiences"
        ).df(),
    }
    validation = con.execute(
        "select kind, mode, hit_rate, baseline_hit_rate from audience_metrics order by 1, 2"
    ).df()
    con.close()
    print("\naudiences on the test window (new buyers caught by an audience of the same size):")
    print("validation figures the pipeline chose on:")
    print(validation.round(4).to_string(index=False))
    names = {"item": train.item_ids, "category": train.category_names}
    for kind, frame in tables.items():
        if frame.empty:
            print(f"{kind} audiences: none published")
            continue
        targets = sorted(frame["g"].unique())
        groups = np.array([int(np.flatnonzero(names[kind] == t)[0]) for t in targets])
        size = int(frame["rank"].max())
        buyers = (relevant.astype(np.float32) @ aud.group_matrix(train, kind, groups)).tocsc() > 0
        base = aud.build_audiences(
            PopularityRecommender().fit(train), train, kind, groups, size, mode="baseline"
        )
        hits = base_hits = n_buyers = 0
        for g, target in enumerate(targets):
            who = set(buyers[:, g].nonzero()[0])
            members = frame.loc[frame["g"] == target, "customer_id"].to_numpy(dtype=object)
            rows = np.searchsorted(train.user_ids, members)
            hits += len(who & set(rows.tolist()))
            base_hits += len(who & set(base.users[g][base.users[g] >= 0].tolist()))
            n_buyers += len(who)
        ours, theirs = hits / max(n_buyers, 1), base_hits / max(n_buyers, 1)
        print(
            f"{kind} audiences ({len(targets)} × {size}, ranked by {frame['model'].iloc[0]}): "
            f"hit rate {ours:.4f} vs baseline {theirs:.4f} "
            f"({ours / theirs if theirs else float('nan'):.2f}×) over {n_buyers:,} new buyers"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["synthetic", "online_retail"],
        choices=["synthetic", "online_retail"],
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    for ds in _datasets(out, args.datasets):
        bench(ds, out)


if __name__ == "__main__":
    main()
