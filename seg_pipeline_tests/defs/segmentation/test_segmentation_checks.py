import pytest
from dagster_duckdb import DuckDBResource

from seg_pipeline.defs.segmentation.checks import (
    no_dominant_segment,
    no_empty_segment,
    one_segment_per_customer,
)


@pytest.fixture
def duckdb_resource(tmp_path):
    resource = DuckDBResource(database=str(tmp_path / "work.duckdb"))
    with resource.get_connection() as con:
        con.execute(
            "create table customer_rfm as select * from (values ('a'), ('b'), ('c')) t(customer_id)"
        )
        con.execute(
            "create table customer_segments as select * from "
            "(values ('a', 'S1'), ('b', 'S1'), ('c', 'S2')) t(customer_id, segment_id)"
        )
        con.execute(
            "create table segment_profiles as select * from "
            "(values ('S1', 2, 0.667), ('S2', 1, 0.333)) t(segment_id, n_customers, share)"
        )
    return resource


def test_checks_pass_on_consistent_tables(duckdb_resource):
    assert one_segment_per_customer(duckdb=duckdb_resource).passed
    assert no_empty_segment(duckdb=duckdb_resource).passed
    assert not no_dominant_segment(duckdb=duckdb_resource).passed  # S1 holds 67% > 60%


def test_a_customer_in_two_segments_fails(duckdb_resource):
    with duckdb_resource.get_connection() as con:
        con.execute("insert into customer_segments values ('a', 'S2')")
    assert not one_segment_per_customer(duckdb=duckdb_resource).passed


def test_an_empty_segment_fails(duckdb_resource):
    with duckdb_resource.get_connection() as con:
        con.execute("insert into segment_profiles values ('S3', 0, 0.0)")
    assert not no_empty_segment(duckdb=duckdb_resource).passed
