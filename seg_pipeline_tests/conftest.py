"""Shared fixtures: a small seeded shop on disk and per-test database paths under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from seg_pipeline.lib.synthetic import generate_shop, write_shop

SHARED_DATASET = (
    Path(__file__).resolve().parents[2] / "shared" / "datasets" / "online_retail.csv.gz"
)


@pytest.fixture(scope="session")
def small_shop_files(tmp_path_factory) -> dict[str, Path]:
    """A 400-customer synthetic shop written as CSV once per session."""
    directory = tmp_path_factory.mktemp("shop")
    return write_shop(generate_shop(n_customers=400, n_items=96, seed=7), directory)


@pytest.fixture
def write_csv(tmp_path):
    """Write text to a CSV file in tmp_path and return its path."""

    def _write(text: str, name: str = "events.csv") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return _write
