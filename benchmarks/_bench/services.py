"""Services a benchmark starts and stops: PostgreSQL + Redis through ``.ci/services.sh``, and
``mlflow models serve`` (the baseline the serving benchmark compares against)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _bench.env import BIN, REPO
from _bench.output import log

SERVICES_SH = REPO / ".ci" / "services.sh"


def start_services(services_dir: Path) -> dict:
    """PostgreSQL + Redis on loopback (``.ci/services.sh start``): ``{"env": the exported
    variables (FRAUDFLOW_POSTGRES_URL, FRAUDFLOW_REDIS_URL), "redis_pid": redis-server's pid}``."""
    out = subprocess.run(
        ["bash", str(SERVICES_SH), "start", str(services_dir)], capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        raise RuntimeError(f"services.sh start failed ({out.returncode}): {out.stderr[-1500:]}")
    env = {}
    for line in out.stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value
    if "FRAUDFLOW_REDIS_URL" not in env:
        raise RuntimeError(f"services.sh printed no FRAUDFLOW_REDIS_URL: {out.stdout!r}")
    return {"env": env, "redis_pid": int((services_dir / "redis.pid").read_text().strip())}


def stop_services(services_dir: Path) -> None:
    out = subprocess.run(
        ["bash", str(SERVICES_SH), "stop", str(services_dir)], capture_output=True, text=True, timeout=180
    )
    if out.returncode != 0:
        log(f"services.sh stop failed ({out.returncode}): {out.stderr[-800:]}")


@contextlib.contextmanager
def backing_services() -> Iterator[dict]:
    """``start_services`` in a fresh directory, stopped and removed on exit."""
    # Not under a 0700 directory: services.sh runs PostgreSQL as the postgres user.
    services_dir = Path(tempfile.mkdtemp(prefix="ff-bench-services-"))
    services_dir.chmod(0o755)
    log(f"starting PostgreSQL + Redis ({SERVICES_SH} start {services_dir})")
    try:
        yield start_services(services_dir)
    finally:
        with contextlib.suppress(Exception):
            stop_services(services_dir)
        log("PostgreSQL + Redis stopped")
        shutil.rmtree(services_dir, ignore_errors=True)


class MlflowServer:
    """``mlflow models serve`` (uvicorn, its default single worker) in its own process group."""

    def __init__(self, settings, model_uri: str) -> None:
        from fraudflow.deployment.service_process import free_port

        self.settings, self.model_uri = settings, model_uri
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = settings.root / "logs" / f"mlflow-serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> MlflowServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": self.settings.mlflow_tracking_uri,
        }
        cmd = [str(BIN / "mlflow"), "models", "serve", "-m", self.model_uri, "--env-manager", "local"]
        self.proc = subprocess.Popen(
            [*cmd, "-h", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, timeout: float = 120) -> MlflowServer:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            time.sleep(0.5)
        raise TimeoutError(f"mlflow models serve not ready after {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
