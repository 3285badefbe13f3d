"""Shared fixtures: a small seeded shop on disk and per-test database paths under tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seg_pipeline.lib.synthetic import generate_shop, write_shop

# Files that take minutes, longest first. Each test worker takes a whole file (``--dist
# loadfile``) in collection order: started last, one of these left a worker running alone for
# minutes at the end of the suite.
SLOW_FILES = (
    "test_killed_runs.py",
    "test_shop_shapes.py",
    "test_engine.py",
    "test_reliability.py",
    "test_end_to_end.py",
    "test_cli.py",
    "test_incremental_rescoring.py",
)


def pytest_collection_modifyitems(items):
    """Put the slow files first (a stable sort: the order within a file is kept)."""
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))


# The UCI Online Retail file: $SEG_ONLINE_RETAIL_CSV, else beside the checkout (where CI has it).
SHARED_DATASET = Path(
    os.environ.get("SEG_ONLINE_RETAIL_CSV")
    or Path(__file__).resolve().parents[2] / "shared" / "datasets" / "online_retail.csv.gz"
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


@pytest.fixture(scope="session")
def spark_remote(tmp_path_factory):
    """A Spark Connect endpoint: $SPARK_REMOTE (CI starts one), else a local server started
    from the installed pyspark for this session. Without pyspark or Java the Spark tests skip,
    unless SEG_REQUIRE_SPARK is set (CI), where they fail instead."""
    import os
    import shutil
    import socket

    required = bool(os.environ.get("SEG_REQUIRE_SPARK"))

    def unavailable(why: str):
        if required:
            pytest.fail(f"SEG_REQUIRE_SPARK is set but {why}")
        pytest.skip(why)

    try:
        import pyspark  # noqa: F401
    except ImportError:
        unavailable('pyspark is not installed (pip install -e ".[spark]")')
    if os.environ.get("SPARK_REMOTE"):
        yield os.environ["SPARK_REMOTE"]
        return
    if shutil.which("java") is None:
        unavailable("java is not installed (apt-get install openjdk-17-jre-headless)")
    from seg_pipeline.lib.spark.server import start_server, stop_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = tmp_path_factory.mktemp("spark")
    remote = start_server(state, port=port, driver_memory="3g")
    try:
        yield remote
    finally:
        stop_server(state)


@pytest.fixture(scope="module")
def spark(spark_remote):
    """A Connect session, stopped after the module (a client that fitted models hangs at exit
    otherwise)."""
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(spark_remote).getOrCreate()
    yield session
    session.stop()
