"""A Spark Connect server for tests: pyspark's own ``spark-submit`` running the
``SparkConnectServer`` class (what Spark's ``sbin/start-connect-server.sh`` runs; the pip wheel
ships the class and jar, not the script), on a free loopback port, stopped by the test.

It stands for the Spark Connect server a team runs beside its cluster: ``local[2]`` here, a
``spark://`` master there. Its scratch space and warehouse go under the given folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fraudflow.deployment.service_process import free_port

READY = b"Spark Connect server started at"


@contextmanager
def spark_connect_server(scratch: Path, *, master: str = "local[2]", timeout: float = 180) -> Iterator[str]:
    """Start the server, yield its ``sc://127.0.0.1:<port>`` URL, stop it (its process group)."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    scratch.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(spark_home / "bin" / "spark-submit"),
        "--class",
        "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--name",
        "fraudflow-test-connect",
        "--master",
        master,
        "--driver-memory",
        "2g",
        "--driver-java-options",
        f"-XX:+ExitOnOutOfMemoryError -Djava.io.tmpdir={scratch}",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.sql.catalogImplementation=in-memory",
        "--conf",
        f"spark.sql.warehouse.dir={scratch / 'warehouse'}",
        "--conf",
        f"spark.local.dir={scratch / 'local'}",
        "--conf",
        "spark.ui.enabled=false",
        "spark-internal",
    ]
    log_path = scratch / "connect-server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "SPARK_HOME": str(spark_home)},
        )
    try:
        started = time.monotonic()
        while READY not in log_path.read_bytes():
            if server.poll() is not None or time.monotonic() - started > timeout:
                raise RuntimeError(f"Spark Connect server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
