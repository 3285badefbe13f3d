"""Writing a night's recommendation tables to the DuckDB work database.

Only what Python computes is written here: the lists (with their reasons decoded to text), the
candidates' metrics, the item similarities and the model kept between refits. Each night's lists,
kept state and metrics go in one transaction, so a failed night leaves last night's tables whole.
"""

from __future__ import annotations

from contextlib import contextmanager

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from seg_pipeline.lib.privacy import ensure_privacy_tables, pseudonym_sql
from seg_pipeline.lib.recommendations.interactions import InteractionMatrix
from seg_pipeline.lib.recommendations.kept_model import KeptModel, save_state
from seg_pipeline.lib.recommendations.lists import Lists
from seg_pipeline.lib.recommendations.reasons import Reason
from seg_pipeline.lib.recommendations.refit import PopularityNight, RefitNight
from seg_pipeline.lib.recommendations.rescore import RescoreNight


@contextmanager
def _night_lists(con: duckdb.DuckDBPyConnection, night, *, model_run_id, run_id, key, reuse=None):
    """Open the night's transaction and replace the lists; the block adds the rest of the
    night (kept state, metrics, its ``recommendation_runs`` row) before the commit."""
    con.execute("begin transaction")
    write_lists(
        con,
        night.lists,
        night.full,
        model=night.champion.name,
        model_run_id=model_run_id,
        run_id=run_id,
        key=key,
        reuse=reuse,
    )
    yield
    con.execute("commit")


def write_refit_night(
    con: duckdb.DuckDBPyConnection,
    night: RefitNight,
    kept: KeptModel | None,
    metrics: pd.DataFrame,
    *,
    model_run_id: str,
    run_id: str,
    key: str,
) -> tuple[int, int]:
    """Replace the lists, keep the new model (or drop the old one) and add tonight's metrics,
    in one transaction; returns the lists' row and customer counts."""
    with _night_lists(con, night, model_run_id=model_run_id, run_id=run_id, key=key):
        save_state(con, night.full.user_ids, night.fingerprints, kept, refit=True)
        con.register("metrics_df", metrics)
        con.execute(
            "create table if not exists recommendation_metrics as "
            "select * from metrics_df where false"
        )
        con.execute(
            "delete from recommendation_metrics where as_of = $as_of", {"as_of": night.as_of}
        )
        con.execute("insert into recommendation_metrics by name select * from metrics_df")
        record_night(con, night.as_of, run_id, "refit", night.evaluation.champion_key, None)
    con.unregister("metrics_df")
    return list_counts(con)


def write_rescore_night(
    con: duckdb.DuckDBPyConnection, night: RescoreNight, *, run_id: str, key: str
) -> tuple[int, int]:
    """Replace the re-scored customers' lists (the others keep theirs) and tonight's history
    fingerprints, in one transaction; returns the lists' row and customer counts."""
    kept = night.kept
    with _night_lists(
        con,
        night,
        model_run_id=kept.model_run_id,
        run_id=run_id,
        key=key,
        reuse=night.kept_customers,
    ):
        save_state(con, night.full.user_ids, night.fingerprints, refit=False)
        record_night(con, kept.trained_as_of, run_id, "rescore", kept.champion, None)
    return list_counts(con)


def write_popularity_night(
    con: duckdb.DuckDBPyConnection,
    night: PopularityNight,
    *,
    model_run_id: str,
    run_id: str,
    key: str,
) -> tuple[int, int]:
    """Replace the lists with popularity lists and drop any kept model (the next night tries
    to fit one again), in one transaction; no metrics are added."""
    with _night_lists(con, night, model_run_id=model_run_id, run_id=run_id, key=key):
        save_state(con, night.full.user_ids, night.fingerprints, None, refit=True)
        con.execute(f"create table if not exists recommendation_metrics ({METRICS_COLUMNS})")
        record_night(con, night.as_of, run_id, "popularity", night.champion.name, night.note)
    return list_counts(con)


# recommendation_metrics' columns, for a first night that evaluated nothing.
METRICS_COLUMNS = (
    "candidate varchar, model varchar, params varchar, fit_seconds double, precision double, "
    "recall double, f1 double, ndcg double, map double, hit_rate double, mrr double, "
    "n_users bigint, coverage double, diversity double, novelty double, is_champion boolean, "
    "is_baseline boolean, segment varchar, as_of date, split_date date, run_id varchar, "
    "model_run_id varchar"
)


def record_night(con, model_as_of, run_id: str, night: str, champion: str, note: str | None):
    """One row per run in ``recommendation_runs``: which kind of night, which model, and what
    the data could not support (``note``)."""
    con.execute(
        "create table if not exists recommendation_runs (run_id varchar, night varchar, "
        "champion varchar, model_trained_as_of date, note varchar)"
    )
    con.execute("delete from recommendation_runs where run_id = $run_id", {"run_id": run_id})
    con.execute(
        "insert into recommendation_runs values ($run_id, $night, $champion, $as_of, $note)",
        {
            "run_id": run_id,
            "night": night,
            "champion": champion,
            "as_of": model_as_of,
            "note": note,
        },
    )


def write_item_similarities(
    con: duckdb.DuckDBPyConnection,
    item_ids: np.ndarray,
    pairs: tuple,
    *,
    method: str,
    run_id: str,
) -> dict:
    """Replace ``item_similarities`` with ``pairs`` (``neighbours.item_similarity_pairs``);
    returns its metadata."""
    rows, cols, vals = pairs
    con.register("sim_pairs", pa.table({"i": rows, "j": cols, "score": vals}))
    con.register(
        "sim_item_ids",
        pa.table({"idx": np.arange(len(item_ids)), "item_id": item_ids.astype(str)}),
    )
    con.execute(
        """
        create or replace table item_similarities as
        select a.item_id,
               row_number() over (partition by a.item_id order by p.score desc, b.item_id)
                   as rank,
               b.item_id as similar_item_id, p.score::double as score,
               $method as method, $run_id as run_id
        from sim_pairs p
        join sim_item_ids a on a.idx = p.i
        join sim_item_ids b on b.idx = p.j
        """,
        {"method": method, "run_id": run_id},
    )
    con.unregister("sim_pairs")
    con.unregister("sim_item_ids")
    n_rows, n_items = con.execute(
        "select count(*), count(distinct item_id) from item_similarities"
    ).fetchall()[0]
    return {"dagster/row_count": n_rows, "items_with_neighbours": n_items, "method": method}


def list_counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    return tuple(
        con.execute(
            "select count(*), count(distinct customer_id) from customer_recommendations"
        ).fetchall()[0]
    )


def write_lists(
    con: duckdb.DuckDBPyConnection,
    lists: Lists,
    full: InteractionMatrix,
    *,
    model: str,
    model_run_id: str,
    run_id: str,
    key: str,
    reuse: np.ndarray | None = None,
) -> None:
    """Replace ``customer_recommendations`` with tonight's lists; the caller holds the
    transaction (``write_refit_night``, ``write_rescore_night``).

    ``reuse`` lists the customers whose rows from the previous night are kept as they are (only
    the run id changes). Their reasons name an item the customer bought or looked at, whose text
    is part of the kept model's catalogue signature (kept_model.py), so that text is current too.
    """
    long = pa.table(
        {
            "u": lists.users,
            "rank": lists.ranks,
            "i": lists.items,
            "score": lists.scores,
            "b": lists.because,
            "reason": lists.reason,
            "source": lists.source,
            "bought": lists.bought,
        }
    )
    user_ids = pa.table(
        {"u": np.arange(full.shape[0]), "customer_id": pa.array(full.user_ids, pa.string())}
    )
    item_ids = pa.table(
        {"i": np.arange(full.shape[1]), "item_id": pa.array(full.item_ids, pa.string())}
    )
    tables = {
        "recs_long": long,
        "user_ids": user_ids,
        "item_ids": item_ids,
        "reused_ids": pa.table(
            {"customer_id": pa.array([] if reuse is None else reuse, pa.string())}
        ),
    }
    for name, value in tables.items():
        con.register(name, value)
    ensure_privacy_tables(con)
    reused = ""
    if reuse is not None and len(reuse):
        # Lists written before item titles were published get theirs from the catalogue.
        has_titles = con.execute(
            "select count(*) from information_schema.columns "
            "where table_name = 'customer_recommendations' and column_name = 'item_title'"
        ).fetchall()[0][0]
        previous = (
            "select * replace ($run_id as run_id) from customer_recommendations"
            if has_titles
            else "select p.*, c.title as item_title from customer_recommendations p "
            "left join item_catalog c using (item_id)"
        )
        reused = (
            f"select * from ({previous}) "
            "where customer_id in (select customer_id from reused_ids) "
            "and customer_id not in (select customer_id from recommendation_opt_outs) "
            "union all by name "
        )
    # Customers who opted out get no list; they are kept by id (work file only) so the checks
    # can tell an opt-out from a missing list.
    con.execute(
        f"""
        create or replace table recommendation_opt_outs as
        select customer_id from user_ids
        where {pseudonym_sql("customer_id")} in (select customer_hash from opted_out_customers)
        """,
        {"key": key},
    )
    # Text is looked up per customer and per item first, so the list rows (millions at scale)
    # join on integers only.
    con.execute(
        f"""
        create or replace table customer_recommendations_next as
        with users as (
            select users.u, users.customer_id, seg.segment_name
            from user_ids users
            left join customer_segments seg using (customer_id)
            where users.customer_id not in (select customer_id from recommendation_opt_outs)
        ),
        -- Every item with its title: the recommended one, and the one behind the reason.
        because as (
            select b.i, b.item_id, bc.title
            from item_ids b
            left join item_catalog bc using (item_id)
        )
        {reused}
        select
            users.customer_id,
            r.rank::integer as rank,
            items.item_id,
            items.title as item_title,
            r.score,
            case when r.source = 0 then $model else 'segment_popularity' end as model,
            {Reason.decode_sql("r.reason", "r.bought", "b.title", "users.segment_name")}
                as reason,
            b.item_id as because_item_id,
            $model_run_id as model_run_id,
            $run_id as run_id
        from recs_long r
        join users on users.u = r.u
        join because items on items.i = r.i
        left join because b on b.i = r.b
        """,
        {"model": model, "model_run_id": model_run_id, "run_id": run_id},
    )
    con.execute("drop table if exists customer_recommendations")
    con.execute("alter table customer_recommendations_next rename to customer_recommendations")
    for name in tables:
        con.unregister(name)


def opted_out_rows(con: duckdb.DuckDBPyConnection, full: InteractionMatrix) -> np.ndarray:
    """Which rows of ``full`` are customers who opted out (``recommendation_opt_outs``, written
    with tonight's lists)."""
    out = con.execute("select customer_id from recommendation_opt_outs").fetchnumpy()
    return np.isin(full.user_ids, np.asarray(out["customer_id"], dtype=object))


# Why a customer is in an audience: the history item behind the model's score, else their
# purchases in the item's category, else the model's taste match.
_AUDIENCE_REASON = """
    case
        when {because} is not null then 'Bought ' || {because}
        when a.owned > 0
            then 'Bought ' || a.owned || ' item' || if(a.owned = 1, '', 's')
                 || coalesce(' in ' || {category}, '')
        else 'Buys what its buyers buy'
    end
"""


def write_audiences(
    con: duckdb.DuckDBPyConnection,
    audiences: tuple,
    full: InteractionMatrix,
    rates: pd.DataFrame | None,
    *,
    as_of,
    split,
    model_run_id: str,
    run_id: str,
) -> dict:
    """Replace ``item_audiences`` and ``category_audiences`` and, on a night that evaluated
    them, add the validation hit rates to ``audience_metrics``, in one transaction; returns
    each table's row count."""
    item, category = audiences
    ids = {
        "aud_users": pa.table({"u": np.arange(full.shape[0]), "customer_id": full.user_ids}),
        "aud_items": pa.table({"i": np.arange(full.shape[1]), "item_id": full.item_ids}),
        "aud_categories": pa.table(
            {
                "c": np.arange(len(full.category_names)),
                "category": pa.array(full.category_names.astype(str), pa.string()),
            }
        ),
        "aud_item_rows": pa.Table.from_pandas(item.long(), preserve_index=False),
        "aud_category_rows": pa.Table.from_pandas(category.long(), preserve_index=False),
    }
    for name, value in ids.items():
        con.register(name, value)
    params = {"model_run_id": model_run_id, "run_id": run_id}
    item_reason = _AUDIENCE_REASON.format(
        because="coalesce(b.title, b.item_id)", category="t.category"
    )
    con.execute("begin transaction")
    con.execute(
        f"""
        create or replace table item_audiences as
        select t.item_id, t.title as item_title, a.rank::integer as rank, u.customer_id,
               a.score::double as score,
               {item_reason} as reason,
               b.item_id as because_item_id, $model as model,
               $model_run_id as model_run_id, $run_id as run_id
        from aud_item_rows a
        join aud_users u using (u)
        join aud_items ti on ti.i = a."group"
        join item_catalog t on t.item_id = ti.item_id
        left join aud_items bi on bi.i = a.because
        left join item_catalog b on b.item_id = bi.item_id
        order by 1, 3
        """,
        params | {"model": item.model},
    )
    con.execute(
        f"""
        create or replace table category_audiences as
        select c.category, a.rank::integer as rank, u.customer_id, a.score::double as score,
               {_AUDIENCE_REASON.format(because="null", category="c.category")} as reason,
               $model as model, $model_run_id as model_run_id, $run_id as run_id
        from aud_category_rows a
        join aud_users u using (u)
        join aud_categories c on c.c = a."group"
        order by 1, 2
        """,
        params | {"model": category.model},
    )
    con.execute(f"create table if not exists audience_metrics ({AUDIENCE_METRICS_COLUMNS})")
    if rates is not None and len(rates):
        con.register("aud_rates", rates)
        con.execute("delete from audience_metrics where as_of = $as_of", {"as_of": as_of})
        con.execute(
            """
            insert into audience_metrics by name
            select kind, mode, model, $size::integer as audience_size, buyers::bigint as buyers,
                   hits::bigint as hits, hit_rate, baseline_hit_rate, lift,
                   $as_of::date as as_of, $split::date as split_date, $model_run_id
                   as model_run_id, $run_id as run_id
            from aud_rates
            """,
            params | {"as_of": as_of, "split": split, "size": int(item.users.shape[1])},
        )
        con.unregister("aud_rates")
    con.execute("commit")
    for name in ids:
        con.unregister(name)
    return {
        table: con.execute(f"select count(*) from {table}").fetchall()[0][0]
        for table in ("item_audiences", "category_audiences", "audience_metrics")
    }


AUDIENCE_METRICS_COLUMNS = (
    "kind varchar, mode varchar, model varchar, audience_size integer, buyers bigint, "
    "hits bigint, hit_rate double, baseline_hit_rate double, lift double, as_of date, "
    "split_date date, model_run_id varchar, run_id varchar"
)
