"""A work database prepared up to the dbt marts, so a domain's test materialises only its own
assets (``domain_run``)."""

import dagster as dg
import pytest

from seg_pipeline.definitions import build_definitions
from seg_pipeline.defs.resources import PipelineSettings

MARTS = ("customer_features", "customer_rfm", "item_catalog", "int_customer_item_daily")


class DomainRun:
    """Runs chosen assets of ``nightly_job`` (and their checks) against one work database."""

    def __init__(self, settings: PipelineSettings, tracking: str):
        self.settings = settings
        self.defs = build_definitions(settings, tracking)
        self.graph = self.defs.resolve_asset_graph()

    def run(self, selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
        selection = selection.required_multi_asset_neighbors()
        keys = sorted(selection.resolve(self.graph), key=lambda k: k.to_user_string())
        return self.defs.resolve_job_def("nightly_job").execute_in_process(
            asset_selection=keys, raise_on_error=False
        )


@pytest.fixture(scope="module")
def domain_run(tmp_path_factory, small_shop_files) -> DomainRun:
    root = tmp_path_factory.mktemp("domain")
    settings = PipelineSettings(
        events_path=str(small_shop_files["events"]),
        items_path=str(small_shop_files["items"]),
        database=str(root / "published.duckdb"),
        demo_dir=str(root / "demo"),
    )
    runner = DomainRun(settings, f"sqlite:///{root / 'mlflow.db'}")
    prepared = runner.run(dg.AssetSelection.assets(*MARTS).upstream())
    assert prepared.success
    return runner
