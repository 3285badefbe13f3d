"""Checks that guard the published recommendations."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from seg_pipeline.lib.drift import relative_drop


@dg.asset_check(
    asset="customer_recommendations",
    blocking=True,
    description="Every purchasing customer gets a full list (or every item they could still get).",
)
def full_list_per_customer(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        longest = con.execute("select max(rank) from customer_recommendations").fetchall()[0][0]
        if longest is None:
            return _no_lists(con)
        # Distinct ranks: a bit per rank OR-ed together and counted, when ranks fit in 64 bits
        # (an order of magnitude cheaper than count(distinct rank) over millions of rows).
        distinct_ranks = (
            "bit_count(bit_or(case when rank between 1 and 64 then 1::ubigint << (rank - 1) end))"
            if longest is not None and longest <= 64
            else "count(distinct rank)"
        )
        short, missing, n = con.execute(
            f"""
            with n as (select $longest::integer as n),
            n_available as (select count(*) as n from item_catalog where available),
            -- A customer can get a full list unless they bought nearly every available item.
            -- Their purchase rows bound that from above; only customers above the bound get the
            -- exact count of distinct items bought, instead of counting distinct pairs for
            -- everyone.
            purchase_rows as (
                select customer_id, count(*) as n_rows
                from int_customer_item_daily where n_orders > 0
                group by customer_id
            ),
            heavy as (
                select customer_id from purchase_rows, n, n_available
                where purchase_rows.n_rows > n_available.n - n.n
            ),
            heavy_bought as (
                select d.customer_id, count(*) as n_bought
                from (
                    select distinct customer_id, item_id from int_customer_item_daily
                    where n_orders > 0 and customer_id in (select customer_id from heavy)
                ) d
                join item_catalog i using (item_id)
                where i.available
                group by d.customer_id
            ),
            lists as (
                select customer_id, count(*) as n_rows, {distinct_ranks} as n_ranks,
                       max(rank) as max_rank
                from customer_recommendations
                group by customer_id
            ),
            counts as (
                -- n_open is exact for heavy customers and a lower bound of at least n for the
                -- others, so least(n, n_open) is exact for everyone.
                select r.customer_id,
                       n_available.n - case when h.customer_id is not null
                                            then coalesce(b.n_bought, 0)
                                            else coalesce(p.n_rows, 0) end as n_open,
                       coalesce(l.n_rows, 0) as n_rows, coalesce(l.n_ranks, 0) as n_ranks,
                       l.max_rank
                from customer_rfm r
                cross join n_available
                left join purchase_rows p using (customer_id)
                left join heavy h using (customer_id)
                left join heavy_bought b using (customer_id)
                left join lists l using (customer_id)
                where r.customer_id not in (select customer_id from recommendation_opt_outs)
            )
            select
                count(*) filter (where n_rows <> least(n.n, n_open) or n_ranks <> n_rows
                                 or max_rank <> n_rows),
                count(*) filter (where n_rows = 0),
                any_value(n.n)
            from counts, n
            """,
            {"longest": longest},
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bool(short == 0 and n is not None),
        metadata={
            "customers_with_wrong_list": short,
            "customers_without_list": missing,
            "list_length": n or 0,
        },
    )


def _no_lists(con) -> dg.AssetCheckResult:
    """No list at all is right only when no customer has an available item left to get (a
    single-product shop whose customers all bought it)."""
    could_get = con.execute(
        """
        select count(*) from customer_rfm r
        where r.customer_id not in (select customer_id from recommendation_opt_outs)
          and exists (
            select 1 from item_catalog i
            where i.available and not exists (
                select 1 from int_customer_item_daily d
                where d.customer_id = r.customer_id and d.item_id = i.item_id and d.n_orders > 0))
        """
    ).fetchall()[0][0]
    return dg.AssetCheckResult(
        passed=could_get == 0,
        metadata={"customers_without_list": could_get, "list_length": 0},
    )


@dg.asset_check(
    asset="customer_recommendations",
    blocking=True,
    description="No purchased, unknown or unavailable item, and every row has a reason.",
)
def recommendations_respect_rules(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        bought, unknown, unavailable, no_reason, opted_out = con.execute(
            """
            select
                count(*) filter (where exists (
                    select 1 from int_customer_item_daily d
                    where d.customer_id = c.customer_id and d.item_id = c.item_id
                      and d.n_orders > 0)),
                count(*) filter (where i.item_id is null),
                count(*) filter (where not coalesce(i.available, true)),
                count(*) filter (where coalesce(trim(c.reason), '') = ''),
                count(*) filter (
                    where c.customer_id in (select customer_id from recommendation_opt_outs))
            from customer_recommendations c
            left join item_catalog i using (item_id)
            """
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bool(bought == unknown == unavailable == no_reason == opted_out == 0),
        metadata={
            "purchased_items": bought,
            "unknown_items": unknown,
            "unavailable_items": unavailable,
            "rows_without_reason": no_reason,
            "opted_out_customers": opted_out,
        },
    )


@dg.asset_check(
    asset="recommendation_metrics",
    blocking=False,
    description="Warns when the champion's NDCG fell by more than 20% since the last run date.",
)
def champion_quality_stable(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        rows = con.execute(
            "select as_of, ndcg from recommendation_metrics where is_champion and segment = 'all' "
            "order by as_of desc limit 2"
        ).fetchall()
    passed, metadata = relative_drop(rows, 0.2, "ndcg")
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )


@dg.asset_check(
    asset="recommendation_metrics",
    blocking=False,
    description="Warns when no model beat popularity, so the popularity list was published.",
)
def champion_beats_popularity(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        rows = con.execute(
            """
            select candidate, ndcg, is_champion, is_baseline from recommendation_metrics
            where segment = 'all' and as_of = (select max(as_of) from recommendation_metrics)
              and (is_champion or is_baseline)
            """
        ).fetchall()
    champion = next((r for r in rows if r[2]), None)
    baseline = next((r for r in rows if r[3]), None)
    if champion is None or baseline is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="no model has been evaluated yet (see recommendations_supported_by_data)",
        )
    return dg.AssetCheckResult(
        passed=bool(not champion[3]),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "champion": champion[0],
            "champion_ndcg": float(champion[1]),
            "popularity": baseline[0],
            "popularity_ndcg": float(baseline[1]),
        },
    )


@dg.asset_check(
    asset="customer_recommendations",
    blocking=False,
    description="Warns when the history could not support choosing a model (a few days, a "
    "single product), so popularity lists were published, and says why.",
)
def recommendations_supported_by_data(
    context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource
) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        found = con.execute(
            "select night, note from recommendation_runs where run_id = $run_id",
            {"run_id": context.op_execution_context.run_id},
        ).fetchall()
    night, note = found[0] if found else (None, None)
    return dg.AssetCheckResult(
        passed=note is None,
        severity=dg.AssetCheckSeverity.WARN,
        description=note,
        metadata={"night": night or "unknown", "why": note or "a model was chosen as configured"},
    )


@dg.asset_check(
    asset="item_audiences",
    blocking=True,
    description="No opted-out customer and no buyer of the item in its audience, ranks 1..n "
    "without gaps, and every row has a reason.",
)
def audiences_respect_rules(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        opted_out, bought, bad_ranks, no_reason = con.execute(
            """
            with rows as (
                select item_id as target, customer_id, rank, reason, item_id from item_audiences
                union all
                select category, customer_id, rank, reason, null from category_audiences
            )
            select
                count(*) filter (
                    where customer_id in (select customer_id from recommendation_opt_outs)),
                count(*) filter (where item_id is not null and exists (
                    select 1 from int_customer_item_daily d
                    where d.customer_id = rows.customer_id and d.item_id = rows.item_id
                      and d.n_orders > 0)),
                (select count(*) from (
                    select target from rows group by target
                    having min(rank) <> 1 or max(rank) <> count(*)
                        or count(distinct rank) <> count(*))),
                count(*) filter (where coalesce(trim(reason), '') = '')
            from rows
            """
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=bool(opted_out == bought == bad_ranks == no_reason == 0),
        metadata={
            "opted_out_customers": opted_out,
            "customers_who_bought_the_item": bought,
            "audiences_with_bad_ranks": bad_ranks,
            "rows_without_reason": no_reason,
        },
    )


@dg.asset_check(
    asset="category_audiences",
    blocking=False,
    description="Warns when there are no category audiences (the items have no category).",
)
def category_audiences_present(duckdb: DuckDBResource) -> dg.AssetCheckResult:
    with duckdb.get_connection() as con:
        n, categories = con.execute(
            "select (select count(*) from category_audiences), "
            "(select count(distinct category) from item_catalog where category is not null)"
        ).fetchall()[0]
    return dg.AssetCheckResult(
        passed=n > 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows": n,
            "categories_in_catalogue": categories,
            "why": "no item has a category: give the items file a category column"
            if categories == 0
            else ("" if n else "no customer bought from the categories"),
        },
    )
