"""One materialisation of nightly_job on a small synthetic shop, asserting the contract tables."""

from pathlib import Path

import duckdb
import mlflow
import pytest

from seg_pipeline.definitions import build_definitions
from seg_pipeline.defs.resources import PipelineSettings
from seg_pipeline.lib.contract import CONTRACT_TABLES, MAY_BE_EMPTY


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, small_shop_files):
    root = tmp_path_factory.mktemp("e2e")
    settings = PipelineSettings(
        events_path=str(small_shop_files["events"]),
        items_path=str(small_shop_files["items"]),
        database=str(root / "published.duckdb"),
        demo_dir=str(root / "demo"),
    )
    tracking = f"sqlite:///{root / 'mlflow.db'}"
    defs = build_definitions(settings, tracking)
    result = defs.resolve_job_def("nightly_job").execute_in_process(raise_on_error=False)
    con = duckdb.connect(str(settings.published_path), read_only=True)
    yield result, con, tracking, settings
    con.close()


def test_job_succeeds_with_every_check_passing(nightly):
    result, _, _, _ = nightly
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) > 30
    failed = [e.check_name for e in evaluations if not e.passed]
    assert failed == []


def test_contract_tables_are_complete_and_from_one_run(nightly):
    result, con, _, _ = nightly
    for table in CONTRACT_TABLES:
        n, run_ids = con.execute(
            f"select count(*), coalesce(list(distinct run_id), []) from {table}"
        ).fetchall()[0]
        assert n > 0 or table in MAY_BE_EMPTY, table
        assert run_ids == ([result.run_id] if n else []), table


def test_rfm_scores_and_segments(nightly):
    _, con, _, _ = nightly
    bad = con.execute(
        """
        select count(*) from customer_rfm
        where r_score not between 1 and 5 or f_score not between 1 and 5
           or m_score not between 1 and 5
           or rfm_cell <> r_score::varchar || f_score::varchar || m_score::varchar
           or rfm_segment is null or recency_days < 0 or frequency < 1
           or last_purchase_at < first_purchase_at
        """
    ).fetchall()[0][0]
    assert bad == 0
    # Better recency score means more recent: mean recency falls as r_score rises.
    means = [
        r[0]
        for r in con.execute(
            "select avg(recency_days) from customer_rfm group by r_score order by r_score"
        ).fetchall()
    ]
    assert means == sorted(means, reverse=True)
    segments = {
        r[0] for r in con.execute("select distinct rfm_segment from customer_rfm").fetchall()
    }
    assert {"Champions", "Lost"} <= segments


def test_segments_cover_every_customer_with_readable_profiles(nightly):
    _, con, _, _ = nightly
    n_rfm, n_seg, n_distinct = con.execute(
        "select (select count(*) from customer_rfm), count(*), count(distinct customer_id) "
        "from customer_segments"
    ).fetchall()[0]
    assert n_rfm == n_seg == n_distinct
    profiles = con.execute(
        "select segment_id, segment_name, n_customers, share, description from segment_profiles"
    ).fetchall()
    assert 3 <= len(profiles) <= 10
    assert sum(p[3] for p in profiles) == pytest.approx(1.0)
    for _, name, n, _, description in profiles:
        assert not name.lower().startswith("cluster")
        assert f"{n:,} customers" in description
    assert len({p[1] for p in profiles}) == len(profiles)


def test_recommendations_obey_the_contract(nightly):
    _, con, _, _ = nightly
    ranks_ok = con.execute(
        """
        select bool_and(ranks = list_sort(ranks) and ranks[1] = 1 and len(ranks) = 10)
        from (select customer_id, list(rank order by rank) as ranks
              from customer_recommendations group by customer_id)
        """
    ).fetchall()[0][0]
    assert ranks_ok
    missing = con.execute(
        "select count(*) from customer_rfm where customer_id not in "
        "(select customer_id from customer_recommendations)"
    ).fetchall()[0][0]
    assert missing == 0
    no_reason = con.execute(
        "select count(*) from customer_recommendations where reason is null or length(reason) < 10"
    ).fetchall()[0][0]
    assert no_reason == 0


def test_audiences_are_ranked_prospects_with_reasons_and_validated(nightly):
    _, con, _, settings = nightly
    work = duckdb.connect(str(settings.work_path), read_only=True)
    # Each audience holds its 500 best prospects, or every prospect of a small shop: the
    # customers with any event who never bought the item.
    rows = work.execute(
        """
        with prospects as (
            select i.item_id, count(*) filter (where c.customer_id not in (
                select customer_id from int_customer_item_daily d
                where d.item_id = i.item_id and d.n_orders > 0)) as n
            from (select distinct item_id from item_audiences) i,
                 (select distinct customer_id from int_customer_item_daily) c
            group by 1
        )
        select a.item_id, count(*) = least(500, any_value(p.n)),
               bool_and(reason is not null and length(reason) > 5),
               list(rank order by rank) = list_sort(list(rank)) and min(rank) = 1
                   and max(rank) = count(*),
               count(*) filter (where d.n_orders > 0) = 0
        from item_audiences a
        join prospects p using (item_id)
        left join (
            select customer_id, item_id, sum(n_orders) as n_orders
            from int_customer_item_daily group by all
        ) d using (customer_id, item_id)
        group by 1
        """
    ).fetchall()
    work.close()
    assert len(rows) == 20
    assert all(full and why and ranks and prospects for _, full, why, ranks, prospects in rows)
    categories = con.execute("select count(distinct category) from category_audiences").fetchall()
    assert categories[0][0] > 0
    # Every mode was validated beside the baseline; the published ranking is one of them.
    modes = con.execute("select kind, list(mode order by mode) from audience_metrics group by 1")
    assert dict(modes.fetchall()) == {
        k: ["baseline", "blend", "model"] for k in ("item", "category")
    }


def test_champion_beats_popularity_and_metrics_are_published(nightly):
    _, con, _, _ = nightly
    overall = "from recommendation_metrics where segment = 'all'"
    champion = con.execute(f"select model, ndcg {overall} and is_champion").fetchall()
    baseline = con.execute(f"select model, ndcg {overall} and is_baseline").fetchall()
    assert len(champion) == len(baseline) == 1
    assert baseline[0][0] == "popularity"
    assert champion[0][1] >= baseline[0][1]
    n_candidates = con.execute(f"select count(*) {overall}").fetchall()[0][0]
    assert n_candidates >= 15  # the search: several settings per family, plus blends
    families = {r[0] for r in con.execute(f"select distinct model {overall}").fetchall()}
    assert {
        "popularity",
        "segment_popularity",
        "als",
        "bpr",
        "item_knn_cosine",
        "item_knn_tfidf",
        "item_knn_bm25",
        "content_tfidf",
        "hybrid",
    } <= families
    per_segment = con.execute(
        "select count(distinct segment) from recommendation_metrics where segment <> 'all'"
    ).fetchall()[0][0]
    assert per_segment >= 3
    published = {
        r[0] for r in con.execute("select distinct model from customer_recommendations").fetchall()
    }
    # Everyone with a purchase gets the champion; customers without one, the cold-start lists.
    assert champion[0][0] in published
    assert published <= {champion[0][0], "segment_popularity"}


def test_experiments_are_in_mlflow_tagged_with_the_dagster_run(nightly):
    result, con, tracking, _ = nightly
    client = mlflow.MlflowClient(tracking)
    model_run_id = con.execute("select distinct model_run_id from customer_segments").fetchall()[0][
        0
    ]
    run = client.get_run(model_run_id)
    assert run.data.tags["dagster.run_id"] == result.run_id
    assert "silhouette" in run.data.metrics
    experiment = client.get_experiment_by_name("segmentation")
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{model_run_id}'"
    )
    assert len(children) >= 5  # one per candidate k
    rec_run = con.execute("select distinct model_run_id from customer_recommendations").fetchall()[
        0
    ][0]
    assert client.get_run(rec_run).data.params["champion"]


def test_segment_charts_and_report_are_attached(nightly):
    result, _, _, _ = nightly
    meta = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        meta[mat.asset_key.to_user_string()] = mat.metadata
    assert (
        "data:image/png;base64,"
        in meta["customer_segments"]["Choosing the number of segments"].value
    )
    assert "data:image/png;base64," in meta["customer_segments"]["Dendrogram"].value
    assert "data:image/png;base64," in meta["segment_profiles"]["RFM grid"].value
    # The report is its own step, after the migration model; it embeds the charts the
    # selection logged to MLflow.
    report = Path(meta["segment_report"]["path"].value).read_text()
    assert "<table>" in report and report.count("data:image/png;base64,") >= 4
    for key in ("forecast_eta2", "rfm_segment_forecast_eta2", "rfm_cell_forecast_eta2"):
        assert 0 <= meta["customer_segments"][key].value <= 1


def test_value_forecast_and_reasons_cover_every_buyer(nightly):
    result, con, _, _ = nightly
    buyers, forecast, bad, no_reason, in_360 = con.execute(
        """
        select (select count(*) from customer_rfm),
               (select count(*) from customer_value_forecast),
               (select count(*) from customer_value_forecast
                where expected_spend < 0 or buy_probability not between 0 and 1
                   or horizon_days <> 90 or model_run_id is null),
               (select count(*) from customer_segments where reason is null or reason = ''),
               (select count(expected_spend) from customer_360)
        """
    ).fetchall()[0]
    assert forecast == buyers == in_360 and bad == 0 and no_reason == 0
    report = [
        e.event_specific_data.materialization.metadata["path"].value
        for e in result.get_asset_materialization_events()
        if e.event_specific_data.materialization.asset_key.to_user_string() == "segment_report"
    ][0]
    text = Path(report).read_text()
    assert "Value forecast calibration" in text and "value forecast (holdout, out of fold)" in text


def test_backfill_builds_history_keeps_ids_and_assigns_between_refits(nightly, tmp_path):
    result, con, tracking, settings = nightly
    first = dict(con.execute("select segment_id, segment_name from segment_profiles").fetchall())
    con.close()
    # An earlier as_of on overlapping data: a backfill date.
    earlier = PipelineSettings(**{**settings.model_dump(), "as_of": "2025-12-01"})
    defs = build_definitions(earlier, tracking)
    assert defs.resolve_job_def("nightly_job").execute_in_process().success
    pub = duckdb.connect(str(settings.published_path), read_only=True)
    dates = pub.execute("select count(distinct as_of) from segment_history").fetchall()[0][0]
    assert dates == 2
    second = dict(pub.execute("select segment_id, segment_name from segment_profiles").fetchall())
    kept = set(first) & set(second)
    assert len(kept) >= min(len(first), len(second)) // 2
    assert all(first[i] == second[i] for i in kept)
    moves = pub.execute(
        "select kind, sum(n_customers), min(from_date) < min(to_date) "
        "from segment_migration group by kind"
    ).fetchall()
    customers = pub.execute("select count(distinct customer_id) from segment_history").fetchall()[
        0
    ][0]
    assert {m[0] for m in moves} == {"behavioural", "rfm"}
    assert all(m[1] == customers and m[2] for m in moves)
    pub.close()
    # Between re-fits, customers are assigned to the stored segments without a new model.
    again = (
        build_definitions(settings, tracking)
        .resolve_job_def("nightly_job")
        .execute_in_process(
            run_config={"ops": {"behavioural_segments": {"config": {"refit": False}}}}
        )
    )
    assert again.success
    pub = duckdb.connect(str(settings.published_path), read_only=True)
    methods = pub.execute("select distinct method from customer_segments").fetchall()
    assigned = {
        r[0] for r in pub.execute("select distinct segment_id from customer_segments").fetchall()
    }
    # A later night on the same database re-uses dbt's saved parse; its rows still carry its
    # own run id (dbt reads it from the environment on every build).
    stamped = {
        table: pub.execute(f"select list(distinct run_id) from {table}").fetchall()[0][0]
        for table in (
            "customer_rfm",
            "item_catalog",
            "customer_360",
            "segment_migration",
            "segment_history",
        )
    }
    pub.close()
    assert methods == [("assigned",)]
    assert assigned <= set(second)
    assert stamped["segment_history"] and again.run_id in stamped["segment_history"]
    assert {t: ids for t, ids in stamped.items() if t != "segment_history"} == {
        t: [again.run_id] for t in stamped if t != "segment_history"
    }
