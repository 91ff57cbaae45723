"""The production profile on real engines: PostgreSQL and Redis (Debian packages, started by
.ci/run or here by .ci/services.sh), a real `mlflow server` on PostgreSQL, Airflow on PostgreSQL
with the CeleryExecutor (an `airflow api-server` and an `airflow celery worker` process run the
tasks), Feast's SQL registry on PostgreSQL and its Redis online store, and `bentoml serve`
reading the model from the MLflow server and the features from Redis.

Airflow reads its configuration at import, and this pytest process is configured for the
local profile (conftest.py), so every Airflow step runs in a subprocess through the CLI
(`fraudflow run ... --executor`), with the production settings in its environment only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pandas as pd
import pytest

from fraudflow import tags
from fraudflow.deployment.service_process import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.production]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START = dt.date(2018, 4, 1)
DAYS = 30
LAST = START + dt.timedelta(days=DAYS - 1)
CELERY_DAYS = [LAST - dt.timedelta(days=2), LAST - dt.timedelta(days=1), LAST]  # ingested on Celery


def _services() -> tuple[dict[str, str], Path | None]:
    """PostgreSQL and Redis URLs: the ones .ci/run started, else start them here."""
    if os.environ.get("FRAUDFLOW_TEST_POSTGRES_URL") and os.environ.get("FRAUDFLOW_TEST_REDIS_URL"):
        return {
            "FRAUDFLOW_POSTGRES_URL": os.environ["FRAUDFLOW_TEST_POSTGRES_URL"],
            "FRAUDFLOW_REDIS_URL": os.environ["FRAUDFLOW_TEST_REDIS_URL"],
        }, None
    folder = Path(tempfile.mkdtemp(prefix="ff-services-"))
    folder.chmod(0o755)  # the cluster runs as the postgres user when we are root
    out = subprocess.run(
        ["bash", str(REPO / ".ci" / "services.sh"), "start", str(folder)], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    urls = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.split("\n") if line.strip())
    return urls, folder


class _Process:
    def __init__(self, name: str, command: list[str], env: dict[str, str], logs: Path) -> None:
        self.log = logs / f"{name}.log"
        self.proc = subprocess.Popen(
            command, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )

    def wait_for(self, probe, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            if probe():
                return
            time.sleep(0.5)
        raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def production(airflow_db, tmp_path_factory):
    """A production-profile home with its engines running; yields (env, settings, processes)."""
    urls, services_dir = _services()
    root = tmp_path_factory.mktemp("production")
    logs = root / "logs"
    logs.mkdir()
    mlflow_port, api_port = free_port(), free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRAUDFLOW_", "MLFLOW_TRACKING_"))}
    env = base | urls
    mlflow_password = secrets.token_urlsafe(24)
    auth_config = root / "mlflow_basic_auth.ini"  # as deploy/mlflow/basic_auth.ini, users in a temp SQLite
    auth_config.write_text(
        (REPO / "deploy" / "mlflow" / "basic_auth.ini")
        .read_text()
        .replace("sqlite:////data/fraudflow/mlflow/basic_auth.db", f"sqlite:///{root / 'mlflow_auth.db'}")
    )
    env |= {
        "FRAUDFLOW_PROFILE": "production",
        "FRAUDFLOW_HOME": str(root / "home"),
        "FRAUDFLOW_MLFLOW_SERVER_URL": f"http://127.0.0.1:{mlflow_port}",
        "FRAUDFLOW_AIRFLOW_API_URL": f"http://127.0.0.1:{api_port}",
        "FRAUDFLOW_AIRFLOW_JWT_SECRET": secrets.token_urlsafe(64),
        "FRAUDFLOW_API_TOKEN": secrets.token_urlsafe(32),  # production requires one
        # MLflow's basic auth, as compose runs it: every client signs in as the bootstrapped admin.
        "MLFLOW_TRACKING_USERNAME": "fraudflow",
        "MLFLOW_TRACKING_PASSWORD": mlflow_password,
        "FRAUDFLOW_TASK_RETRY_DELAY_SECONDS": "1",
        "FRAUDFLOW_LANDING_TIMEOUT_SECONDS": "5",
        "FRAUDFLOW_LANDING_POKE_SECONDS": "1",
        # the files are written whole before each run (settling itself: tests/test_foundation.py)
        "FRAUDFLOW_LANDING_SETTLE_SECONDS": "0",
        "FRAUDFLOW_GATE_MIN_AVERAGE_PRECISION": "0.2",  # a 500-card world: the test is about the engines
        "FRAUDFLOW_GATE_MIN_AUC_ROC": "0.6",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",  # else each task holds its slot ~5 s after finishing
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    processes: list[_Process] = []
    try:
        pg = urls["FRAUDFLOW_POSTGRES_URL"]
        mlflow = _Process(
            "mlflow",
            [
                str(BIN / "mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--artifacts-destination",
                str(root / "home" / "mlflow" / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
                "--workers",
                "1",
            ],
            env
            | {
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "MLFLOW_BACKEND_STORE_URI": f"{pg}/mlflow",  # not on the command line
                "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
                "MLFLOW_AUTH_ADMIN_USERNAME": "fraudflow",
                "MLFLOW_AUTH_ADMIN_PASSWORD": mlflow_password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
            },
            logs,
        )
        processes.append(mlflow)
        migrate = subprocess.run(
            [str(BIN / "fraudflow"), "airflow", "db", "migrate"], env=env, capture_output=True, text=True
        )
        assert migrate.returncode == 0, migrate.stderr[-3000:]
        api = _Process(
            "api-server",
            [str(BIN / "fraudflow"), "airflow", "api-server", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"],
            env,
            logs,
        )
        worker = _Process(
            "celery-worker",
            [str(BIN / "fraudflow"), "airflow", "celery", "worker", "--concurrency", "2", "--skip-serve-logs"],
            env,
            logs,
        )
        processes += [api, worker]
        mlflow.wait_for(lambda: _answers(f"http://127.0.0.1:{mlflow_port}/health"))
        api.wait_for(lambda: _answers(f"http://127.0.0.1:{api_port}/api/v2/monitor/health"))
        worker.wait_for(lambda: " ready." in worker.log.read_text(errors="replace"))
        yield env, processes
    finally:
        for process in reversed(processes):
            process.stop()
        if services_dir is not None:
            subprocess.run(["bash", str(REPO / ".ci" / "services.sh"), "stop", str(services_dir)], check=False)


def _fraudflow(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fraudflow"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _run(env: dict[str, str], dag_id: str, day: dt.date | None = None, conf: dict | None = None) -> dict:
    args = ["run", dag_id, "--executor", "--json", "--conf", json.dumps(conf or {})]
    out = _fraudflow(env, *args, *(["--date", day.isoformat()] if day else []))
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and outcome["state"] == "success", (outcome, out.stderr[-4000:])
    return outcome


def _settings(env: dict[str, str], monkeypatch):
    for key in [k for k in os.environ if k.startswith(("FRAUDFLOW_", "MLFLOW_TRACKING_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(("FRAUDFLOW_", "MLFLOW_TRACKING_")):
            monkeypatch.setenv(key, value)
    from fraudflow.settings import get_settings

    return get_settings()


def _sql(env: dict[str, str], database: str, query: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(f"{env['FRAUDFLOW_POSTGRES_URL']}/{database}") as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


def test_settings_resolve_to_the_real_services(production, monkeypatch):
    from fraudflow.features.store import repo_config
    from fraudflow.orchestration.runtime import airflow_env

    env, _ = production
    settings = _settings(env, monkeypatch)
    airflow = airflow_env(settings)
    assert airflow["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/airflow")
    assert airflow["AIRFLOW__CELERY__BROKER_URL"] == env["FRAUDFLOW_REDIS_URL"] + "/0"
    assert settings.mlflow_tracking_uri == env["FRAUDFLOW_MLFLOW_SERVER_URL"]
    feast = repo_config(settings)
    assert feast.registry.path.endswith("/feast") and feast.online_store.type == "redis"
    # Redis runs with AUTH (.ci/services.sh): the password reaches Feast's connection string,
    # and a client without it is refused, so every Redis path here is tested with AUTH.
    import redis

    password = urlsplit(env["FRAUDFLOW_REDIS_URL"]).password
    assert password and f'password="{password}"' in feast.online_store.connection_string
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=urlsplit(env["FRAUDFLOW_REDIS_URL"]).port).ping()
    # MLflow runs its basic-auth app: anonymous calls are refused, fraudflow's credentials work.
    search = f"{env['FRAUDFLOW_MLFLOW_SERVER_URL']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, timeout=10).status_code == 401
    credentials = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    assert httpx.get(search, auth=credentials, timeout=10).status_code == 200
    # the Airflow metadata really is in PostgreSQL (migrated by the fixture)
    assert _sql(env, "airflow", "select count(*) from alembic_version") == [(1,)]


def test_ingest_runs_on_celery_workers_against_postgres(production, monkeypatch):
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions, write_landing_files
    from fraudflow.lake import list_partitions
    from fraudflow.schema import normalise_transactions
    from tests.helpers import publish_history

    env, _ = production
    settings = _settings(env, monkeypatch)
    frame = normalise_transactions(simulate_transactions(SimulationConfig(days=DAYS, customers=500, terminals=1000)))
    history = frame[frame["TX_DATETIME"].dt.date < CELERY_DAYS[0]]
    publish_history(settings, history)  # the older days straight to the lake; the last three through Airflow
    write_landing_files(frame, settings.landing_dir, days=(CELERY_DAYS[0], LAST))
    for day in CELERY_DAYS:
        _run(env, "ingest_transactions", day)
    assert list_partitions(settings)[-3:] == CELERY_DAYS
    runs = _sql(env, "airflow", "select state from dag_run where dag_id = 'ingest_transactions'")
    assert runs == [("success",)] * 3
    # every task went through Celery: its result backend (PostgreSQL) holds one success per task
    states = dict(
        _sql(
            env,
            "airflow",
            "select state, count(*) from task_instance where dag_id = 'ingest_transactions' group by state",
        )
    )
    done = _sql(env, "airflow", "select count(*) from celery_taskmeta where status = 'SUCCESS'")[0][0]
    assert states["success"] == 3 * 5 and done >= states["success"]  # resolve_day, sensor, load, validate, publish
    assert states["skipped"] == 3 * 2  # review_wanted, request_review: nothing was quarantined


def test_features_and_training_on_celery_register_in_the_mlflow_server(production, monkeypatch):
    import redis
    from mlflow import MlflowClient

    from fraudflow.registry import CHALLENGER, MODEL_NAME

    env, _ = production
    _run(env, "build_features", LAST)
    online_keys = redis.Redis.from_url(env["FRAUDFLOW_REDIS_URL"] + "/1").dbsize()
    assert online_keys > 500  # customers and terminals materialized into Redis db 1
    registry_rows = _sql(env, "feast", "select count(*) from feature_services")[0][0]
    assert registry_rows == 3  # fraud_detection_v1, _online_v1 and _realtime_v1 in Feast's SQL registry

    _run(env, "train_model", LAST, {"reason": "production profile test", "candidate_params": {"mlp": {"epochs": 3}}})
    _settings(env, monkeypatch)  # this process signs in to MLflow too (MLFLOW_TRACKING_USERNAME / _PASSWORD)
    client = MlflowClient(env["FRAUDFLOW_MLFLOW_SERVER_URL"])
    version = client.get_model_version_by_alias(MODEL_NAME, CHALLENGER)
    assert version.tags[tags.REASON] == "production profile test"
    assert _sql(env, "mlflow", "select count(*) from registered_models")[0][0] == 1  # the server's PostgreSQL store


def test_the_scoring_service_reads_the_mlflow_server_and_redis(production, monkeypatch):
    from fraudflow import registry
    from fraudflow.deployment.service_process import ServingProcess
    from fraudflow.lake import read_lake
    from fraudflow.serving.state import DeploymentState, write_state

    env, _ = production
    settings = _settings(env, monkeypatch)
    moved = registry.promote_challenger(settings)
    write_state(settings, DeploymentState(champion=moved[registry.CHAMPION], reason="production profile test"))
    passed = {k: v for k, v in env.items() if k.startswith(("FRAUDFLOW_", "MLFLOW_TRACKING_"))}
    service = ServingProcess(settings, env=passed).start()
    auth = {"Authorization": f"Bearer {env['FRAUDFLOW_API_TOKEN']}"}
    try:
        row = read_lake(settings, start=LAST, end=LAST).iloc[-1]
        body = {
            "transaction_id": int(row.TRANSACTION_ID),
            "tx_datetime": row.TX_DATETIME.isoformat(),
            "customer_id": str(row.CUSTOMER_ID),
            "terminal_id": str(row.TERMINAL_ID),
            "tx_amount": float(row.TX_AMOUNT),
        }
        assert httpx.post(f"{service.url}/score", json=body, timeout=10).status_code == 401  # token required
        answer = httpx.post(f"{service.url}/score", json=body, headers=auth, timeout=10).json()
        # The same card a minute later: its windows count the transaction just pushed to Redis.
        later = {
            **body,
            "transaction_id": 990_000_001,
            "tx_datetime": (row.TX_DATETIME + pd.Timedelta("1min")).isoformat(),
        }
        second = httpx.post(f"{service.url}/score", json=later, headers=auth, timeout=10).json()
        health = httpx.get(f"{service.url}/healthz", timeout=10).json()
    finally:
        service.stop()  # flushes the prediction log
    assert answer["model_version"] == moved[registry.CHAMPION]
    assert not answer.get("degraded") and not second.get("degraded"), (answer, second)
    served = _served_features(settings, [body["transaction_id"], later["transaction_id"]])
    assert served[1]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == served[0]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] + 1
    import redis

    live_keys = redis.Redis.from_url(env["FRAUDFLOW_REDIS_URL"] + "/1").keys("*")
    assert live_keys  # Feast's Redis online store holds the histories (db 1)
    assert health["feature_store"] == "ok"


def _served_features(settings, ids: list[int]) -> list[dict]:
    """What the service fed the model for ``ids``, in order (its prediction log)."""
    from fraudflow.serving.prediction_log import read_predictions

    log = read_predictions(settings.predictions_dir).drop_duplicates("transaction_id", keep="last")
    by_id = {str(r.transaction_id): r.features for r in log.itertuples()}
    return [json.loads(by_id[str(i)]) if isinstance(by_id[str(i)], str) else by_id[str(i)] for i in ids]
