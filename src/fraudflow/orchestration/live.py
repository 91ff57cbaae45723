"""Airflow running for real on the fraudflow home: api-server, scheduler and dag-processor as
separate processes with the LocalExecutor, as ``airflow standalone`` runs them, but each
process's log in the home and its pid recorded, so ``fraudflow down`` (and a test's teardown)
stops exactly what was started.

Tasks under the scheduler run in their own processes and reach Airflow through the
api-server's Execution API: every process gets the same API URL and JWT secret.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

from fraudflow.deployment.service_process import free_port
from fraudflow.orchestration.runtime import airflow_env
from fraudflow.settings import Settings

COMPONENTS = ("api-server", "scheduler", "dag-processor")


class LiveProcess(BaseModel):
    name: str
    pid: int
    log: Path


class LiveAirflow(BaseModel):
    """What :func:`start_airflow` started (also written to ``<home>/run/airflow.json``)."""

    api_url: str
    processes: list[LiveProcess]

    @property
    def ui_url(self) -> str:
        return self.api_url


def state_file(settings: Settings) -> Path:
    return settings.root / "run" / "airflow.json"


def live_env(settings: Settings, *, api_url: str, jwt_secret: str) -> dict[str, str]:
    """The environment every Airflow process (and so every task) of one live home shares."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **airflow_env(settings),
        "AIRFLOW__CORE__EXECUTOR": os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",  # else a finished task holds its slot ~5 s
        # an approval's timeout (HITL, applied by the scheduler) lands within 5 s, not 15
        "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def start_airflow(
    settings: Settings, *, port: int | None = None, timeout: float = 180, components: tuple[str, ...] = COMPONENTS
) -> LiveAirflow:
    """Migrate the home's metadata DB, start the components (all three by default; the UI alone:
    ``("api-server",)``), wait until the api-server answers and, if started, the scheduler
    heartbeats. Raises (after stopping what it started) if one exits.

    Touches nothing in this process's environment (a caller may have imported Airflow on
    another home): every Airflow step runs in a child process.
    """
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}"
    env = live_env(settings, api_url=api_url, jwt_secret=secrets.token_urlsafe(48))
    logs = settings.root / "logs" / "airflow-live"
    logs.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    marker = settings.airflow_home / ".fraudflow-migrated"
    if not marker.exists():
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        marker.touch()
    commands = {
        "api-server": [airflow, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        "scheduler": [airflow, "scheduler"],
        "dag-processor": [airflow, "dag-processor"],
    }
    started: list[LiveProcess] = []
    for name in components:
        log = logs / f"{name}.log"
        proc = subprocess.Popen(
            commands[name], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append(LiveProcess(name=name, pid=proc.pid, log=log))
    live = LiveAirflow(api_url=api_url, processes=started)
    state_file(settings).parent.mkdir(parents=True, exist_ok=True)
    state_file(settings).write_text(live.model_dump_json(indent=2))
    try:
        _wait_healthy(live, timeout)
    except Exception:
        stop_airflow(settings)
        raise
    return live


def _wait_healthy(live: LiveAirflow, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in live.processes:
            if not _alive(p.pid):
                raise RuntimeError(f"airflow {p.name} exited: {p.log.read_text(errors='replace')[-3000:]}")
        try:
            health = httpx.get(f"{live.api_url}/api/v2/monitor/health", timeout=2).json()
            waits_for = "scheduler" if any(p.name == "scheduler" for p in live.processes) else "metadatabase"
            if health.get(waits_for, {}).get("status") == "healthy":
                return
        except (httpx.HTTPError, json.JSONDecodeError):
            pass
        time.sleep(1)
    raise TimeoutError(f"Airflow at {live.api_url} not healthy after {timeout:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but was not reaped is a zombie: not alive.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def stop_airflow(settings: Settings, *, grace: float = 30) -> list[str]:
    """Stop every process :func:`start_airflow` recorded (SIGTERM to its process group, SIGKILL
    after ``grace``); returns the names stopped. Idempotent."""
    path = state_file(settings)
    if not path.exists():
        return []
    live = LiveAirflow.model_validate_json(path.read_text())
    stopped = []
    for p in reversed(live.processes):
        try:
            os.killpg(p.pid, signal.SIGTERM)
            stopped.append(p.name)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace
    for p in live.processes:
        while _alive(p.pid) and time.monotonic() < deadline:
            _reap(p.pid)
            time.sleep(0.2)
        if _alive(p.pid):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(p.pid)
    path.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _json_rows(stdout: str) -> list[dict]:
    """The JSON table an ``airflow ... -o json`` command prints (after any log lines)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("["):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return []


def unpause(settings: Settings, live: LiveAirflow, dag_ids: list[str], *, timeout: float = 120) -> None:
    """Unpause DAGs once the dag-processor has parsed them (``airflow dags unpause``)."""
    env = live_env(settings, api_url=live.api_url, jwt_secret="unused-by-the-cli")
    airflow = str(Path(sys.executable).with_name("airflow"))
    deadline = time.monotonic() + timeout
    while True:
        listed = subprocess.run(
            [airflow, "dags", "list", "-o", "json"], env=env, capture_output=True, text=True, timeout=120
        )
        known = {row["dag_id"]: str(row.get("is_paused")).lower() == "true" for row in _json_rows(listed.stdout)}
        paused = [d for d in dag_ids if known.get(d, True)]
        if not paused:
            return
        present = [d for d in paused if d in known]
        if present:
            pattern = "^(" + "|".join(present) + ")$"
            subprocess.run(
                [airflow, "dags", "unpause", "--treat-dag-id-as-regex", pattern, "-y"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not unpause {paused}: {listed.stdout[-1000:]} {listed.stderr[-1000:]}")
        time.sleep(1)
