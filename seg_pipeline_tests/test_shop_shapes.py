"""Shops of odd shapes: every one with a purchasing customer publishes RFM and a segment for
every buyer; what the data cannot support degrades with a warning check that says why."""

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pytest

from seg_pipeline.definitions import build_definitions
from seg_pipeline.defs.resources import PipelineSettings
from seg_pipeline.lib.contract import CONTRACT_TABLES, HISTORY_TABLES

START = datetime(2025, 1, 6, 10, 0)


def _rows(rng, customers, items, days, per_customer, event_type="purchase", prices=True):
    rows = []
    for c in customers:
        for n in range(per_customer):
            day = int(rng.integers(0, days)) if days > 1 else 0
            item = items[int(rng.integers(0, len(items)))]
            ts = (START + timedelta(days=day, minutes=n)).isoformat()
            price = f"{rng.integers(2, 40)}.50" if prices else ""
            rows.append(f"{c},{item},{ts},{event_type},{int(rng.integers(1, 4))},{price},")
    return rows


def _shape(name: str) -> list[str]:
    rng = np.random.default_rng(11)
    customers = [f"C{i:03d}" for i in range(40)]
    items = [f"I{i:02d}" for i in range(12)]
    if name == "single_product":
        return _rows(rng, customers, ["SUBSCRIPTION"], 200, 4)
    if name == "every_event_on_one_day":
        return _rows(rng, customers, items, 1, 3)
    if name == "three_customers":
        return _rows(rng, customers[:3], items, 150, 5)
    if name == "one_customer":
        return _rows(rng, customers[:1], items, 150, 6)
    if name == "no_prices":
        return _rows(rng, customers, items, 200, 5, prices=False)
    if name == "one_buyer_many_browsers":
        return _rows(rng, customers[:1], items, 100, 4) + _rows(
            rng, customers[1:], items, 100, 3, event_type="view"
        )
    if name == "everyone_alike":
        return [f"{c},I01,{START.isoformat()},purchase,1,9.99,O{c}" for c in customers]
    raise ValueError(name)


BUYERS = {"three_customers": 3, "one_customer": 1, "one_buyer_many_browsers": 1}
SHAPES = [
    "single_product",
    "every_event_on_one_day",
    "three_customers",
    "one_customer",
    "no_prices",
    "one_buyer_many_browsers",
    "everyone_alike",
]


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.parametrize("shape", SHAPES)
def test_an_odd_shop_publishes_rfm_and_a_segment_for_every_buyer(shape, tmp_path, tracking):
    events = tmp_path / "events.csv"
    header = "customer_id,item_id,event_ts,event_type,quantity,unit_price,order_id"
    events.write_text("\n".join([header, *_shape(shape)]) + "\n")
    settings = PipelineSettings(events_path=str(events), database=str(tmp_path / "pub.duckdb"))
    result = (
        build_definitions(settings, tracking)
        .resolve_job_def("nightly_job")
        .execute_in_process(raise_on_error=False)
    )
    failed_steps = [e.step_key for e in result.all_events if e.is_step_failure]
    assert result.success, failed_steps
    blocking = [
        e.check_name
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity.value == "ERROR"
    ]
    assert blocking == []
    con = duckdb.connect(str(settings.published_path), read_only=True)
    buyers, segmented = con.execute(
        "select (select count(*) from customer_rfm), "
        "(select count(distinct customer_id) from customer_segments)"
    ).fetchall()[0]
    tables = {
        r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()
    }
    con.close()
    assert buyers == segmented == BUYERS.get(shape, 40)
    assert set(CONTRACT_TABLES) | set(HISTORY_TABLES) <= tables
    warned = {
        e.check_name
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity.value == "WARN"
    }
    if shape in ("one_customer", "everyone_alike"):
        assert "segments_supported_by_data" in warned
    if shape in ("single_product", "every_event_on_one_day"):
        assert "recommendations_supported_by_data" in warned
