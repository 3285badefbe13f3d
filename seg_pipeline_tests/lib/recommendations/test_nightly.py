"""A refit night and a rescore night of the recommender library, on a tiny shop in DuckDB
(no Dagster, no MLflow)."""

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from seg_pipeline.lib.recommendations import tables
from seg_pipeline.lib.recommendations.nightly import NightSettings, plan_night
from seg_pipeline.lib.recommendations.refit import RefitNight, refit_night
from seg_pipeline.lib.recommendations.rescore import rescore_night

AS_OF = date(2025, 6, 30)
# Two tastes: customers of group A buy items A00-A09, group B items B00-B09.
N_PER_GROUP, N_ITEMS = 40, 10
SETTINGS = NightSettings(n=3, families=("als",), factors=(8,), random_state=0)


def _shop(con: duckdb.DuckDBPyConnection, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for group in "AB":
        for c in range(N_PER_GROUP):
            customer = f"{group}{c:03d}"
            items = rng.choice(N_ITEMS, 5, replace=False)
            # Four purchases before the last month, one new item inside it.
            for k, item in enumerate(items):
                day = AS_OF - timedelta(days=int(rng.integers(40, 200)) if k < 4 else 10)
                rows.append((customer, f"{group}{item:02d}", day))
    daily = pd.DataFrame(rows, columns=["customer_id", "item_id", "event_date"]).assign(
        n_orders=1, n_carts=0, n_views=0, rating_sum=0.0, n_ratings=0, n_returns=0
    )
    items = pd.DataFrame(
        {
            "item_id": [f"{g}{i:02d}" for g in "AB" for i in range(N_ITEMS)],
            "title": [f"{g} thing {i}" for g in "AB" for i in range(N_ITEMS)],
            "description": "",
            "category": [g for g in "AB" for _ in range(N_ITEMS)],
            "available": True,
        }
    )
    con.register("daily_df", daily)
    con.register("items_df", items)
    con.execute("create or replace table int_customer_item_daily as select * from daily_df")
    con.execute("create or replace table item_catalog as select * from items_df")
    con.execute("create or replace table ingest_manifest as select $d::date as as_of", {"d": AS_OF})
    con.execute(
        "create or replace table customer_segments as select distinct customer_id, "
        "left(customer_id, 1) as segment_id, 'Group ' || left(customer_id, 1) as segment_name "
        "from daily_df"
    )


@pytest.fixture
def shop(tmp_path):
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    _shop(con)
    yield con
    con.close()


def _refit(con) -> RefitNight:
    plan = plan_night(con, "hash", SETTINGS.retrain_every_days)
    night = refit_night(con, SETTINGS, plan)
    tables.write_refit_night(
        con,
        night,
        night.kept_model("mlflow-run", SETTINGS.n),
        night.metrics_rows(model_run_id="mlflow-run", run_id="run-1"),
        model_run_id="mlflow-run",
        run_id="run-1",
        key="k",
    )
    return night


def _lists(con) -> dict[str, list[str]]:
    rows = con.execute(
        "select customer_id, item_id from customer_recommendations order by customer_id, rank"
    ).fetchall()
    out: dict[str, list[str]] = {}
    for customer, item in rows:
        out.setdefault(customer, []).append(item)
    return out


def test_a_refit_night_beats_popularity_and_lists_only_new_items_of_the_customers_taste(shop):
    night = _refit(shop)
    assert plan_night(shop, "other", 7).why == "the recommendation settings changed"
    assert night.split == AS_OF - timedelta(days=30)
    summary = night.summary(SETTINGS.n)
    assert summary["beats_popularity"] and summary["champion"].startswith("als")
    lists = _lists(shop)
    bought = shop.execute(
        "select customer_id, list(item_id) from int_customer_item_daily group by all"
    ).fetchall()
    assert set(lists) == {c for c, _ in bought}
    for customer, items in bought:
        assert len(lists[customer]) == SETTINGS.n
        assert not set(lists[customer]) & set(items)
    # Popularity across the shop mixes both tastes; the champion's lists stay within one.
    own_taste = np.mean([item[0] == c[0] for c, items in lists.items() for item in items])
    assert own_taste > 0.9
    # Every candidate's metrics, overall and per segment, with the champion flagged once.
    metrics = shop.execute(
        "select segment, count(*) filter (where is_champion) from recommendation_metrics "
        "group by all order by 1"
    ).fetchall()
    assert metrics == [("Group A", 1), ("Group B", 1), ("all", 1)]


def test_a_rescore_night_rescores_only_the_changed_customer_as_a_full_rescore_would(shop):
    _refit(shop)
    before = _lists(shop)
    # The next day, one customer buys another item; nobody else does anything.
    shop.execute("update ingest_manifest set as_of = as_of + 1")
    shop.execute(
        "insert into int_customer_item_daily values ('A000', $item, $d, 1, 0, 0, 0.0, 0, 0)",
        {"item": before["A000"][0], "d": AS_OF},
    )
    plan = plan_night(shop, "hash", SETTINGS.retrain_every_days)
    assert plan.why is None and plan.kept is not None
    night = rescore_night(shop, SETTINGS, plan.kept)
    assert night.counts["customers_rescored"] == 1
    assert list(night.full.user_ids[night.rescored]) == ["A000"]
    tables.write_rescore_night(shop, night, run_id="run-2", key="k")
    after = _lists(shop)
    assert before["A000"][0] not in after["A000"]
    assert {c: v for c, v in after.items() if c != "A000"} == {
        c: v for c, v in before.items() if c != "A000"
    }
    # Re-scoring everyone with the kept model gives the same lists.
    everyone = rescore_night(
        shop, NightSettings(**{**SETTINGS.__dict__, "rescore_all": True}), plan.kept
    )
    assert everyone.counts["customers_rescored"] == len(after)
    tables.write_rescore_night(shop, everyone, run_id="run-3", key="k")
    assert _lists(shop) == after


def test_a_window_without_new_purchases_is_a_clear_error(shop):
    shop.execute(
        "delete from int_customer_item_daily where event_date >= $d",
        {"d": AS_OF - timedelta(days=30)},
    )
    with pytest.raises(ValueError, match="no customer bought a new item"):
        refit_night(shop, SETTINGS, plan_night(shop, "hash", 7))
