"""Staged deployment through real Airflow, a real `bentoml serve` process and MLflow aliases,
with a load generator running throughout: no request may fail during any switch."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from fraudflow import registry, tags
from fraudflow.cli import main
from fraudflow.deployment.controller import promote, replay_sample, run_stage, score_bodies
from fraudflow.deployment.service_process import ServingProcess, stop_recorded_service
from fraudflow.orchestration.runtime import as_logical_date, load_dag, run_dag
from fraudflow.serving.prediction_log import read_predictions
from fraudflow.serving.state import DeploymentState, StaleDeploymentState, read_state, write_state
from tests.helpers import build_serving_home

pytestmark = pytest.mark.e2e


class LoadGenerator(threading.Thread):
    """Sends /score requests back to back from one keep-alive connection until stopped."""

    def __init__(self, url: str, bodies: list[dict]) -> None:
        super().__init__(daemon=True)
        self.url, self.bodies = url, bodies
        self.statuses: dict[str, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = 0
            while not self.stop_event.is_set():
                try:
                    code = str(client.post("/score", json=self.bodies[i % len(self.bodies)]).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                self.statuses[code] = self.statuses.get(code, 0) + 1
                i += 1
                time.sleep(0.01)

    def finish(self) -> dict[str, int]:
        self.stop_event.set()
        self.join(30)
        return self.statuses


@pytest.fixture(scope="module")
def deployment(airflow_db, tmp_path_factory):
    """A home with champion v1 and a live `bentoml serve` following the deployment state."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("deploy") / "home"))
        from fraudflow.settings import get_settings

        settings = get_settings()
        build_serving_home(settings)
        write_state(settings, DeploymentState(champion="1", reason="test start"))
        service = ServingProcess(settings).start()
        mp.setenv("FRAUDFLOW_SERVING_URL", service.url)
        mp.setenv("FRAUDFLOW_SERVING_AUTOSTART", "false")
        bodies = score_bodies(replay_sample(settings, 50))
        yield settings, service, bodies
        assert service.stop() is not None


def _register_copy_of_champion(settings) -> str:
    """A new version with the champion's model: a 'retrained' challenger known to be good."""
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    keep = {k: v for k, v in champion.tags.items() if k != tags.ROLLOUT}
    return registry.register_challenger(settings, model_uri=champion.source, run_id=champion.run_id, tags=keep).version


def _decisions(settings) -> list[dict]:
    path = settings.serving_dir / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _served_version(url: str, body: dict) -> str:
    return httpx.post(f"{url}/score", json=body, timeout=10).json()["model_version"]


def test_staged_rollout_promotes_good_rolls_back_bad_with_zero_failed_requests(deployment):
    settings, service, bodies = deployment
    dag = load_dag("deploy_model")
    conf = {"shadow_requests": 250, "canary_requests": 300, "build_bento": False}
    load = LoadGenerator(service.url, bodies)
    load.start()
    try:
        # v2, a good challenger: shadow -> canary -> promote.
        assert _register_copy_of_champion(settings) == "2"
        good = run_dag(dag, logical_date=as_logical_date(dt.date(2018, 6, 1)), conf=conf)
        assert good.state == "success", good
        assert registry.aliases(settings) == {"champion": "2", "previous": "1"}
        assert read_state(settings).champion == "2" and read_state(settings).mode == "champion"
        assert _served_version(service.url, bodies[0]) == "2"

        # v3 answers slowly once it takes real traffic: shadow passes, canary breaks p99 -> rollback.
        assert _register_copy_of_champion(settings) == "3"
        drill = {"stage": "canary", "challenger_delay_ms": 120}
        bad = run_dag(dag, logical_date=as_logical_date(dt.date(2018, 6, 2)), conf={**conf, "drill": drill})
        assert bad.state == "success", bad  # a rollback is a decision, not a crash
        assert registry.aliases(settings) == {"champion": "2", "previous": "1"}
        assert read_state(settings).champion == "2" and read_state(settings).challenger is None
        assert _served_version(service.url, bodies[0]) == "2"
    finally:
        statuses = load.finish()
    assert set(statuses) == {"200"} and statuses["200"] > 100, statuses

    decisions = _decisions(settings)
    assert [(d["stage"], d.get("check", {}).get("passed")) for d in decisions] == [
        ("shadow", True),
        ("canary", True),
        ("promote", None),
        ("shadow", True),
        ("canary", False),
        ("rollback", None),
    ]
    assert "p99_latency_ms" in decisions[-1]["reason"]
    assert all(d["replay"]["failed"] == 0 for d in decisions if "replay" in d)
    v3 = registry.version_by_alias(settings, registry.PREVIOUS)  # still v1; v3 carries the reason
    assert v3.version == "1"
    from mlflow import MlflowClient

    v3_tags = MlflowClient(settings.mlflow_tracking_uri).get_model_version(registry.MODEL_NAME, "3").tags
    assert v3_tags[tags.ROLLOUT] == "rolled_back" and "canary" in v3_tags[tags.ROLLOUT_REASON]

    # One command restores the previous champion; the service follows without a restart.
    result = CliRunner().invoke(main, ["rollback"])
    assert result.exit_code == 0, result.output
    assert registry.aliases(settings) == {"champion": "1", "previous": "2"}
    deadline = time.monotonic() + 20
    while _served_version(service.url, bodies[0]) != "1" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _served_version(service.url, bodies[0]) == "1"


def test_explain_traces_a_logged_prediction_to_its_data(deployment):
    settings, service, bodies = deployment
    answer = httpx.post(f"{service.url}/score", json=bodies[1], timeout=10).json()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        logged = read_predictions(settings.predictions_dir)
        if (logged["request_id"] == answer["request_id"]).any():
            break
        time.sleep(0.3)
    result = CliRunner().invoke(main, ["explain", answer["request_id"], "--json"])
    assert result.exit_code == 0, result.output
    lineage = json.loads(result.stdout)
    assert lineage["request"]["transaction_id"] == str(bodies[1]["transaction_id"])  # ids are logged as text
    assert lineage["model"]["version"] == answer["model_version"]
    assert lineage["training"]["mlflow_parent_run"]
    assert lineage["data"]["lake_partitions"] and lineage["features"]["feature_service"] == "fraud_detection_v1"
    assert set(lineage["request"]["features"]) >= {"TX_AMOUNT", "TERMINAL_ID_RISK_30DAY_WINDOW"}

    # A client-chosen id that looks like rich markup is printed as text (it crashed explain).
    hostile = httpx.post(f"{service.url}/score", json=bodies[2] | {"transaction_id": "[/x]"}, timeout=10).json()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (read_predictions(settings.predictions_dir)["request_id"] == hostile["request_id"]).any():
            break
        time.sleep(0.3)
    printed = CliRunner().invoke(main, ["explain", hostile["request_id"]])
    assert printed.exit_code == 0, printed.output
    assert "transaction [/x]" in printed.output


def test_first_deployment_promotes_without_a_champion(airflow_db, settings):
    """No champion yet: shadow and canary are recorded as skipped, the challenger is promoted."""
    build_serving_home(settings, days=20, customers=200, terminals=400)  # registers v1 as champion
    registry.delete_alias(settings, registry.CHAMPION)  # start from a registry with no champion
    version = registry.register_challenger(settings, model_uri="models:/fraud-detector/1", run_id=None, tags={})
    dag = load_dag("deploy_model")
    outcome = run_dag(dag, logical_date=as_logical_date(dt.date(2018, 6, 3)), conf={"build_bento": True})
    assert outcome.state == "success", outcome
    assert registry.aliases(settings) == {"champion": version.version}
    assert read_state(settings).champion == version.version
    stages = [(d["stage"], d.get("skipped", False)) for d in _decisions(settings)]
    assert stages == [("shadow", True), ("canary", True), ("promote", False)]
    bento = registry.version_by_alias(settings, registry.CHAMPION).tags[tags.BENTO]
    assert bento == f"fraud_scoring:v{version.version}"


def test_clean_stop_flushes_every_answered_request(deployment):
    """With an hour-long flush interval only the shutdown hook can write them: none is lost."""
    settings, _, bodies = deployment
    service = ServingProcess(settings, env={"FRAUDFLOW_PREDICTION_FLUSH_SECONDS": "3600"}).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            answered = [client.post("/score", json=b).json()["request_id"] for b in bodies[:25]]
        logged = set(read_predictions(settings.predictions_dir)["request_id"])
        assert not set(answered) & logged  # still buffered: the interval has not passed
    finally:
        assert service.stop() is not None
    logged = set(read_predictions(settings.predictions_dir)["request_id"])
    assert set(answered) <= logged


# -- a rollout that finishes or undoes itself ------------------------------------------------


def _ensure_previous(settings) -> dict[str, str]:
    """Aliases with a ``previous`` to roll back to (earlier tests leave one; alone, make one)."""
    if registry.PREVIOUS not in registry.aliases(settings):
        _register_copy_of_champion(settings)
        registry.promote_challenger(settings)
        write_state(settings, DeploymentState(champion=registry.aliases(settings)[registry.CHAMPION], reason="test"))
    return registry.aliases(settings)


def _serves(url: str, body: dict, version: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _served_version(url, body) == version:
            return True
        time.sleep(0.2)
    return False


def _fraudflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("fraudflow")), *args]
    return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)


def _shadow_stage(settings, service, version: str) -> dict:
    """The first stage of a rollout of ``version``, as deploy_model's shadow task runs it."""
    revision = read_state(settings).revision
    return run_stage(
        settings, service.url, stage="shadow", challenger=version, requests=250, expected_revision=revision
    )


def test_a_manual_rollback_during_a_rollout_is_not_overwritten(deployment):
    settings, service, bodies = deployment
    _ensure_previous(settings)
    version = _register_copy_of_champion(settings)
    shadow = _shadow_stage(settings, service, version)
    assert shadow["check"]["passed"], shadow["check"]["reason"]

    result = CliRunner().invoke(main, ["rollback"])  # a person, while the rollout waits to promote
    assert result.exit_code == 0, result.output
    after_rollback = (registry.aliases(settings), read_state(settings))
    with pytest.raises(StaleDeploymentState, match="changed during this rollout"):
        promote(settings, service.url, version=version, expected_revision=shadow["revision"])
    assert (registry.aliases(settings), read_state(settings)) == after_rollback
    assert after_rollback[1].reason == "manual rollback (fraudflow rollback)"
    registry.drop_challenger(settings, version)


def test_a_challenger_registered_mid_rollout_is_not_promoted_by_it(deployment):
    settings, service, bodies = deployment
    staged = _register_copy_of_champion(settings)
    shadow = _shadow_stage(settings, service, staged)
    newer = _register_copy_of_champion(settings)  # train_model registers meanwhile
    assert registry.aliases(settings)[registry.CHALLENGER] == newer

    promote(settings, service.url, version=staged, expected_revision=shadow["revision"])
    aliases = registry.aliases(settings)
    assert aliases[registry.CHAMPION] == staged and aliases[registry.CHALLENGER] == newer
    assert _serves(service.url, bodies[0], staged)
    registry.drop_challenger(settings, newer)  # it would wait for its own deploy_model run


def test_a_crash_between_alias_moves_converges_on_the_next_run(deployment):
    settings, service, bodies = deployment
    before = _ensure_previous(settings)
    killed = _fraudflow("rollback", env={"FRAUDFLOW_FAILPOINT": "between_alias_moves"})
    assert killed.returncode == 137, killed.stderr[-2000:]
    half = registry.aliases(settings)
    assert half[registry.CHAMPION] == half[registry.PREVIOUS]  # the split the journal is there for

    outcome = run_dag(load_dag("watch_serving"), logical_date=None)
    assert outcome.state == "success", outcome
    expected = {registry.CHAMPION: before[registry.PREVIOUS], registry.PREVIOUS: before[registry.CHAMPION]}
    assert registry.aliases(settings) == expected
    assert read_state(settings).champion == expected[registry.CHAMPION]
    assert _serves(service.url, bodies[0], expected[registry.CHAMPION])


def test_a_failing_canary_returns_the_service_to_the_champion_with_a_reason(deployment, monkeypatch):
    settings, service, bodies = deployment
    champion = registry.aliases(settings)[registry.CHAMPION]
    version = _register_copy_of_champion(settings)
    monkeypatch.setenv("FRAUDFLOW_FAILPOINT", "canary_started=raise")  # the canary task raises
    conf = {"shadow_requests": 250, "canary_requests": 300, "build_bento": False}
    outcome = run_dag(load_dag("deploy_model"), logical_date=as_logical_date(dt.date(2018, 6, 4)), conf=conf)
    assert outcome.state == "failed" and "canary" in outcome.failed_tasks, outcome
    state = read_state(settings)
    assert state.mode == "champion" and state.champion == champion and state.challenger is None
    assert "ended before promote or rollback" in state.reason and "canary of v" in state.reason
    assert _decisions(settings)[-1]["stage"] == "reconcile"
    assert _serves(service.url, bodies[0], champion)
    registry.drop_challenger(settings, version)


def test_a_killed_controller_is_undone_by_watch_serving_with_an_alert(deployment):
    """kill -9 of the controller mid-canary: no teardown can run in a dead process."""
    settings, service, bodies = deployment
    champion = registry.aliases(settings)[registry.CHAMPION]
    version = _register_copy_of_champion(settings)
    conf = json.dumps({"shadow_requests": 250, "build_bento": False})
    killed = _fraudflow("run", "deploy_model", "--conf", conf, env={"FRAUDFLOW_FAILPOINT": "canary_started"})
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert read_state(settings).mode == "canary"  # a share of customers on an unjudged model
    _fail_orphaned_runs("deploy_model")  # what the scheduler does when a task's process dies

    outcome = run_dag(load_dag("watch_serving"), logical_date=None)
    assert outcome.state == "success", outcome
    state = read_state(settings)
    assert state.mode == "champion" and state.champion == champion
    assert "no deploy_model run is driving it" in state.reason
    alerts = [json.loads(line) for line in (settings.root / "monitoring" / "alerts.jsonl").read_text().splitlines()]
    assert alerts[-1]["check"] == "rollout_reconciled" and alerts[-1]["tier"] == "immediate"
    assert _serves(service.url, bodies[0], champion)
    registry.drop_challenger(settings, version)


def _fail_orphaned_runs(dag_id: str) -> None:
    """Mark the runs of a killed ``dag.test()`` process failed, as the scheduler does for runs
    whose task heartbeats stop (``dag.test`` has no scheduler to notice)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        for run in session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.state == DagRunState.RUNNING):
            run.state = DagRunState.FAILED


def _proc_state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return b""


def test_watch_serving_starts_the_champion_when_no_service_answers(deployment, monkeypatch):
    """A champion and no service (a first deployment has none to keep; a crashed one): with
    autostart on, watch_serving alerts service_down and starts it."""
    import signal

    from fraudflow.deployment.service_process import free_port

    settings, _, bodies = deployment
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("FRAUDFLOW_SERVING_URL", url)
    monkeypatch.setenv("FRAUDFLOW_SERVING_AUTOSTART", "true")
    outcome = run_dag(load_dag("watch_serving"), logical_date=None)
    pid = int((settings.serving_dir / "service.pid").read_text())
    try:
        assert outcome.state == "success", outcome
        alerts = [json.loads(line) for line in (settings.root / "monitoring" / "alerts.jsonl").read_text().splitlines()]
        assert any(a["check"] == "service_down" and url in a["summary"] for a in alerts)
        answer = httpx.post(f"{url}/score", json=bodies[0], timeout=30)
        assert answer.status_code == 200 and answer.json()["model_version"] == read_state(settings).champion
        # make down stops it: the recorded pid is a BentoML server (retitled circusd by now).
        assert stop_recorded_service(settings) and not (settings.serving_dir / "service.pid").exists()
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or b"zombie" in _proc_state(pid):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"pid {pid} still running after make down's stop")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        (settings.serving_dir / "service.pid").unlink(missing_ok=True)


def test_watch_serving_does_not_page_before_a_first_model_exists(airflow_db, settings, monkeypatch):
    """A fresh system (make up's first minutes): no champion, so no service is expected to
    answer yet; watch_serving records the probe but sends no service_down page."""
    from fraudflow.deployment.service_process import free_port

    monkeypatch.setenv("FRAUDFLOW_SERVING_URL", f"http://127.0.0.1:{free_port()}")
    outcome = run_dag(load_dag("watch_serving"), logical_date=None)
    assert outcome.state == "success", outcome
    log = settings.root / "monitoring" / "alerts.jsonl"
    alerts = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert [a["check"] for a in alerts] == []
