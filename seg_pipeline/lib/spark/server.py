"""A local Spark Connect server from the installed pyspark package, for one machine and for CI.

On a cluster the Connect endpoint is the cluster's and none of this runs: ``SPARK_REMOTE``
names it. Locally, the server is one JVM that holds the Hive catalog (a Derby metastore, which
one process only may open) and the warehouse; the pipeline, dbt and any SQL client connect to it
over gRPC, so they never contend for the metastore.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 15002
# At INFO the server writes tens of thousands of lines per night; warnings are what a user reads.
_LOG_CONFIG = """\
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
logger.metastore.name = org.apache.hadoop.hive.metastore
logger.metastore.level = error
logger.hiveconf.name = org.apache.hadoop.hive.conf.HiveConf
logger.hiveconf.level = error
"""


def spark_home() -> Path:
    """The Spark distribution inside the installed ``pyspark`` package."""
    try:
        import pyspark
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise RuntimeError(
            'the Spark engine needs the spark extra: pip install -e ".[spark]"'
        ) from exc
    return Path(pyspark.__file__).parent


def remote_url(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> str:
    """The ``SPARK_REMOTE`` value of a server on ``host:port``."""
    return f"sc://{host}:{port}"


def _env(state: Path) -> dict[str, str]:
    conf = state / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "log4j2.properties").write_text(_LOG_CONFIG)
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_CONF_DIR": str(conf),
        "SPARK_LOG_DIR": str(state / "logs"),
        "SPARK_PID_DIR": str(state),
        # Python UDFs run in this interpreter, which has the pipeline's packages.
        "PYSPARK_PYTHON": sys.executable,
    }


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def start_server(
    state: Path,
    *,
    port: int = DEFAULT_PORT,
    master: str = "local[2]",
    driver_memory: str = "6g",
    shuffle_partitions: int = 8,
    conf: dict[str, str] | None = None,
    timeout: float = 120,
) -> str:
    """Start a Spark Connect server whose catalog and warehouse live under ``state``; return
    its ``SPARK_REMOTE`` URL once it accepts connections.

    ``shuffle_partitions`` replaces Spark's default of 200, which on a few cores spends more on
    scheduling empty tasks than on work; on a cluster the cluster's settings apply instead.
    ``conf`` adds or overrides Spark settings.
    """
    state = Path(state).resolve()
    if is_listening(port):
        return remote_url(port)
    warehouse = state / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    metastore = state / "metastore_db"
    confs = {
        "spark.connect.grpc.binding.port": str(port),
        "spark.sql.warehouse.dir": str(warehouse),
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={metastore};create=true"
        ),
        # ALS's iterations make deep task graphs whose deserialisation overflowed the default
        # thread stack (a StackOverflowError in a local task takes the whole server down).
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={state} -Xss16m",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(shuffle_partitions),
        "spark.driver.memory": driver_memory,
        # Tables are rewritten whole or by partition, never appended to from two writers.
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.ui.enabled": "false",
        **(conf or {}),
    }
    args = [str(spark_home() / "sbin" / "start-connect-server.sh"), "--master", master]
    for key, value in confs.items():
        args += ["--conf", f"{key}={value}"]
    subprocess.run(args, env=_env(state), check=True, capture_output=True, cwd=state)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(port):
            return remote_url(port)
        time.sleep(0.5)
    logs = sorted((state / "logs").glob("*.out"))
    tail = logs[-1].read_text().splitlines()[-20:] if logs else []
    raise RuntimeError(
        f"the Spark Connect server did not listen on port {port} within {timeout:.0f} s:\n"
        + "\n".join(tail)
    )


def stop_server(state: Path) -> None:
    """Stop the server started with the same ``state`` folder (no error if none runs)."""
    state = Path(state).resolve()
    subprocess.run(
        [str(spark_home() / "sbin" / "stop-connect-server.sh")],
        env=_env(state),
        check=False,
        capture_output=True,
        cwd=state,
    )
