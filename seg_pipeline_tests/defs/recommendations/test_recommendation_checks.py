import pytest
from dagster_duckdb import DuckDBResource

from seg_pipeline.defs.recommendations.checks import (
    champion_beats_popularity,
    champion_quality_stable,
    full_list_per_customer,
    recommendations_respect_rules,
)


@pytest.fixture
def duckdb_resource(tmp_path):
    resource = DuckDBResource(database=str(tmp_path / "work.duckdb"))
    with resource.get_connection() as con:
        con.execute(
            "create table customer_rfm as select * from (values ('a'), ('b')) t(customer_id)"
        )
        con.execute("create table recommendation_opt_outs (customer_id varchar)")
        con.execute(
            "create table item_catalog as select * from "
            "(values ('x', true), ('y', true), ('z', true), ('w', false)) t(item_id, available)"
        )
        con.execute(
            "create table int_customer_item_daily as select * from "
            "(values ('a', 'x', 1), ('b', 'y', 1)) t(customer_id, item_id, n_orders)"
        )
        con.execute(
            "create table customer_recommendations as select * from (values "
            "('a', 1, 'y', 'Because you bought x'), ('a', 2, 'z', 'Because you bought x'), "
            "('b', 1, 'x', 'Because you bought y'), ('b', 2, 'z', 'Because you bought y')) "
            "t(customer_id, rank, item_id, reason)"
        )
    return resource


def test_checks_pass_on_valid_lists(duckdb_resource):
    assert full_list_per_customer(duckdb=duckdb_resource).passed
    assert recommendations_respect_rules(duckdb=duckdb_resource).passed


@pytest.mark.parametrize(
    "statement",
    [
        "update customer_recommendations set item_id = 'x' where customer_id = 'a' and rank = 1",
        "update customer_recommendations set item_id = 'w' where customer_id = 'a' and rank = 1",
        "update customer_recommendations set item_id = 'nope' where customer_id = 'a' and rank = 1",
        "update customer_recommendations set reason = '' where customer_id = 'b'",
    ],
)
def test_rule_violations_fail(duckdb_resource, statement):
    with duckdb_resource.get_connection() as con:
        con.execute(statement)
    assert not recommendations_respect_rules(duckdb=duckdb_resource).passed


def test_opted_out_customer_needs_no_list_and_must_have_none(duckdb_resource):
    with duckdb_resource.get_connection() as con:
        con.execute("insert into recommendation_opt_outs values ('b')")
    assert not recommendations_respect_rules(duckdb=duckdb_resource).passed
    with duckdb_resource.get_connection() as con:
        con.execute("delete from customer_recommendations where customer_id = 'b'")
    assert recommendations_respect_rules(duckdb=duckdb_resource).passed
    assert full_list_per_customer(duckdb=duckdb_resource).passed


def test_short_list_fails(duckdb_resource):
    with duckdb_resource.get_connection() as con:
        con.execute("delete from customer_recommendations where customer_id = 'b' and rank = 2")
    result = full_list_per_customer(duckdb=duckdb_resource)
    assert not result.passed
    assert result.metadata["customers_with_wrong_list"].value == 1


def _metrics(con, rows):
    con.execute(
        "create or replace table recommendation_metrics (as_of date, segment varchar, "
        "candidate varchar, ndcg double, is_champion boolean, is_baseline boolean)"
    )
    con.executemany("insert into recommendation_metrics values (?, ?, ?, ?, ?, ?)", rows)


def test_ndcg_drop_warns(duckdb_resource):
    with duckdb_resource.get_connection() as con:
        _metrics(
            con,
            [
                ("2025-01-01", "all", "als", 0.30, True, False),
                ("2025-01-02", "all", "als", 0.20, True, False),
                ("2025-01-02", "S1", "als", 0.90, True, False),  # per-segment rows do not count
                ("2025-01-02", "all", "popularity", 0.25, False, True),
            ],
        )
    result = champion_quality_stable(duckdb=duckdb_resource)
    assert not result.passed
    assert result.metadata["relative_drop"].value == pytest.approx(1 / 3)
    assert champion_beats_popularity(duckdb=duckdb_resource).passed


def test_popularity_champion_warns(duckdb_resource):
    with duckdb_resource.get_connection() as con:
        _metrics(
            con,
            [
                ("2025-01-02", "all", "als", 0.20, False, False),
                ("2025-01-02", "all", "popularity", 0.25, True, True),
            ],
        )
    result = champion_beats_popularity(duckdb=duckdb_resource)
    assert not result.passed
    assert result.metadata["popularity_ndcg"].value == pytest.approx(0.25)


def test_repeated_rank_fails(duckdb_resource):
    with duckdb_resource.get_connection() as con:
        con.execute("update customer_recommendations set rank = 1 where customer_id = 'a'")
        con.execute(
            "insert into customer_recommendations values ('a', 2, 'x', 'Because you bought x')"
        )
    # Three rows ranked 1, 1, 2: the rank count differs from the row count.
    assert not full_list_per_customer(duckdb=duckdb_resource).passed


@pytest.mark.parametrize(
    ("bought", "listed", "passes"),
    [
        # Bought two of the three available items: one is left, and a list of one is full.
        ([("x", "2025-01-01"), ("y", "2025-01-01")], ["z"], True),
        ([("x", "2025-01-01"), ("y", "2025-01-01")], [], False),
        # The same item on two days is one item bought: two are left, so one is a short list.
        ([("x", "2025-01-01"), ("x", "2025-01-02")], ["z"], False),
        ([("x", "2025-01-01"), ("x", "2025-01-02")], ["y", "z"], True),
    ],
)
def test_customer_who_bought_nearly_everything_gets_what_is_left(
    duckdb_resource, bought, listed, passes
):
    with duckdb_resource.get_connection() as con:
        con.execute("insert into customer_rfm values ('c')")
        con.execute("alter table int_customer_item_daily add column event_date date")
        for item, day in bought:
            con.execute(
                "insert into int_customer_item_daily values ('c', ?, 1, ?::date)", [item, day]
            )
        for rank, item in enumerate(listed, start=1):
            con.execute(
                "insert into customer_recommendations values ('c', ?, ?, 'Because you bought x')",
                [rank, item],
            )
    assert full_list_per_customer(duckdb=duckdb_resource).passed is passes


@pytest.mark.parametrize(("bought", "passes"), [(["x", "y", "z"], True), (["x", "y"], False)])
def test_no_list_at_all_passes_only_when_nothing_is_left_to_recommend(
    duckdb_resource, bought, passes
):
    with duckdb_resource.get_connection() as con:
        con.execute("delete from customer_recommendations")
        con.execute("delete from customer_rfm where customer_id = 'b'")
        con.execute("delete from int_customer_item_daily")
        for item in bought:
            con.execute("insert into int_customer_item_daily values ('a', ?, 1)", [item])
    assert full_list_per_customer(duckdb=duckdb_resource).passed is passes
