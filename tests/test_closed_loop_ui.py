"""fraudflow inside the Airflow UI, on the home the session's closed loop left (``make demo``'s
code at small scale): a real ``airflow api-server`` with the fraudflow plugin, its login, the
fraudflow page and its served artifacts, the task evidence links, the task logs of runs made
in-process, headless Chromium through the real login page, and the approval before promotion
answered both ways through Airflow's human-in-the-loop API."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from fraudflow import registry, tags
from fraudflow.orchestration.live import start_airflow, stop_airflow
from tests.helpers import CLOSED_LOOP

pytestmark = pytest.mark.e2e

PASSWORD = "fraudflow-ui-test"
QUARANTINED_DAY = CLOSED_LOOP.start + dt.timedelta(days=CLOSED_LOOP.days + CLOSED_LOOP.drift_days)


@pytest.fixture(scope="module")
def ui(closed_loop, tmp_path_factory):
    """The api-server (UI + REST API + plugin) on the loop's home and Airflow DB, user ``admin``
    with a known password; a quarantined day added through the real ingest DAG first."""
    settings, _, _ = closed_loop
    _quarantine_a_day(settings)
    passwords = tmp_path_factory.mktemp("auth") / "passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
        live = start_airflow(settings, components=("api-server",))
    try:
        token = httpx.post(f"{live.api_url}/auth/token", json={"username": "admin", "password": PASSWORD}).json()
        client = httpx.Client(
            base_url=live.api_url, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=60
        )
        yield settings, live, client
    finally:
        stop_airflow(settings)


def _the_next_day():
    """The loop's world one day on (TX_TIME_DAYS counts from the world's start, as the gate checks)."""
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions
    from tests.helpers import day_rows

    days = CLOSED_LOOP.days + CLOSED_LOOP.drift_days + 1
    world = SimulationConfig(start=CLOSED_LOOP.start, days=days, customers=1000, terminals=2000, seed=3)
    return day_rows(simulate_transactions(world), QUARANTINED_DAY).reset_index(drop=True)


def _quarantine_a_day(settings) -> None:
    """The day after the loop, from the simulator, with negative amounts: ingested by the DAG."""
    import os

    from fraudflow.orchestration.runtime import as_logical_date, load_dag, run_dag
    from tests.test_validation_gate import negative_amount

    world = _the_next_day()
    folder = settings.landing_dir / f"date={QUARANTINED_DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    negative_amount(world, folder / "transactions.parquet")
    os.environ.update({"FRAUDFLOW_HOME": str(settings.root), "FRAUDFLOW_REVIEW_QUARANTINE": "true"})
    try:
        outcome = run_dag(load_dag("ingest_transactions"), logical_date=as_logical_date(QUARANTINED_DAY))
    finally:
        os.environ.pop("FRAUDFLOW_HOME")
        os.environ.pop("FRAUDFLOW_REVIEW_QUARANTINE")
    assert outcome.state == "failed" and outcome.failed_tasks == ["validate_batch"], outcome
    states = {t.task_id: t.state for t in outcome.tasks}
    assert states["review_wanted"] == "success" and states["request_review"] == "success"


def test_every_section_renders_real_data_and_its_artifacts_are_served(ui):
    settings, live, client = ui
    o = client.get("/fraudflow/api/overview").json()
    champion = registry.aliases(settings)[registry.CHAMPION]

    assert o["serving"]["state"]["champion"] == champion and o["serving"]["state"]["mode"] == "champion"
    versions = {v["version"]: v for v in o["versions"]}
    assert {"1", "2", "3"} <= set(versions)
    retrained = versions["2"]
    assert retrained["reason"].startswith("drift checks failed") and "input_drift" in retrained["failed_checks"]
    assert retrained["gate"] == "passed" and float(retrained["metrics"]["AP"]) > 0
    assert versions["3"]["rollout"] == "rolled_back" and "error_rate" in versions["3"]["rollout_reason"]
    assert "champion" in versions[champion]["aliases"]
    card = client.get(retrained["model_card"])
    assert card.status_code == 200 and "<h2>Gate checks</h2>" in card.text and "<table>" in card.text
    gate = client.get(retrained["gate_checks"])
    assert gate.status_code == 200 and "<table>" in gate.text

    stages = {d["stage"] for d in o["decisions"]}
    assert {"shadow", "canary", "rollback"} <= stages
    canary = next(d for d in o["decisions"] if d["stage"] == "canary" and d.get("challenger") == "3")
    assert not canary["check"]["passed"] and "error_rate" in canary["check"]["checks"]

    failed = [m for m in o["monitoring"] if not m["passed"]]
    assert failed and any("input_drift" in f for f in failed[0]["failed_checks"])
    report = client.get(failed[0]["input_report"])
    assert report.status_code == 200 and "Dataset Drift is detected" in report.text  # what fraudflow decided

    data = o["data"]
    assert data["published_count"] == CLOSED_LOOP.days + CLOSED_LOOP.drift_days
    (quarantined,) = data["quarantined"]
    assert quarantined["day"] == QUARANTINED_DAY.isoformat() and "TX_AMOUNT" in quarantined["summary"]
    assert client.get(quarantined["data_docs"][0]).status_code == 200
    assert client.get(data["data_docs_index"]).status_code == 200
    assert any(a["check"] == "drift" for a in o["alerts"])
    assert any(a["check"].startswith("task_failed:ingest_transactions.validate_batch") for a in o["alerts"])

    page = client.get("/fraudflow/")
    assert page.status_code == 200
    for heading in ("Serving now", "Model versions", "Rollout decisions", "Monitoring", "Data", "Alerts"):
        assert heading in page.text
    assert f"quarantine-{QUARANTINED_DAY}" in page.text and "signed in as admin" in page.text


def test_artifacts_outside_the_home_and_anonymous_visitors_are_refused(ui, tmp_path):
    settings, live, client = ui
    outside = tmp_path / "secret.txt"
    outside.write_text("not fraudflow's")
    (settings.root / "link-out").symlink_to(outside)
    for path in (
        "/fraudflow/artifacts/..%2F..%2F..%2Fetc%2Fpasswd",
        "/fraudflow/artifacts/%2Fetc%2Fpasswd",
        "/fraudflow/artifacts/link-out",
        "/fraudflow/artifacts/no-such-file.html",
    ):
        answer = client.get(path)
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert "not fraudflow's" not in answer.text and "root:" not in answer.text

    anonymous = httpx.Client(base_url=live.api_url)
    assert anonymous.get("/fraudflow/api/overview").status_code == 401
    assert anonymous.get("/fraudflow/artifacts/monitoring/alerts.jsonl").status_code == 401
    assert anonymous.get("/api/v2/dags").status_code == 401  # like any Airflow page
    page = anonymous.get("/fraudflow/", follow_redirects=False)
    assert page.status_code == 303 and "/auth/login" in page.headers["location"]


def _runs(client, dag_id: str) -> list[dict]:
    return client.get(f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "-start_date"}).json()[
        "dag_runs"
    ]


def _links(client, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict:
    params = {"map_index": map_index} if map_index >= 0 else {}
    answer = client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["extra_links"]


def test_tasks_link_to_their_evidence(ui):
    settings, live, client = ui
    failed_ingest = next(r for r in _runs(client, "ingest_transactions") if r["state"] == "failed")
    docs = _links(client, "ingest_transactions", failed_ingest["dag_run_id"], "validate_batch")["GX Data Docs"]
    assert client.get(docs).status_code == 200 and "TX_AMOUNT" in client.get(docs).text

    trained = next(r for r in _runs(client, "train_model") if r["state"] == "success")
    register = _links(client, "train_model", trained["dag_run_id"], "register_challenger")
    card = client.get(register["Model card"])
    assert card.status_code == 200 and "Model card: fraud-detector" in card.text
    to_mlflow = client.get(register["MLflow run"], follow_redirects=False)
    assert to_mlflow.status_code == 307 and "/#/experiments/" in to_mlflow.headers["location"]
    candidate = _links(client, "train_model", trained["dag_run_id"], "train_candidate", map_index=0)
    assert candidate["MLflow run"].startswith("/fraudflow/mlflow/runs/")

    monitored = next(r for r in _runs(client, "monitor_drift") if r["state"] == "success")
    drift = _links(client, "monitor_drift", monitored["dag_run_id"], "check_champion")["Drift report"]
    assert client.get(drift).status_code == 200

    deployed = next(r for r in _runs(client, "deploy_model") if r["state"] == "success")
    decision = _links(client, "deploy_model", deployed["dag_run_id"], "canary")["Rollout decision"]
    assert decision.startswith("/fraudflow/#decision-")
    assert f'id="{decision.split("#")[1]}"' in client.get("/fraudflow/").text


def _log_text(client, dag_id: str, run_id: str, task_id: str) -> str:
    answer = client.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1", headers={"Accept": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    return json.dumps(answer.json()["content"])


def test_runs_made_in_process_show_their_task_logs(ui):
    """``make demo`` runs every DAG with dag.test(): their task logs are where the UI reads."""
    settings, live, client = ui
    failed_ingest = next(r for r in _runs(client, "ingest_transactions") if r["state"] == "failed")
    text = _log_text(client, "ingest_transactions", failed_ingest["dag_run_id"], "validate_batch")
    assert "quarantined to" in text and "expect_column_values_to_be_between" in text
    trained = next(r for r in _runs(client, "train_model") if r["state"] == "success")
    assert "gate" in _log_text(client, "train_model", trained["dag_run_id"], "evaluate_gate").lower()
    deployed = next(r for r in _runs(client, "deploy_model") if r["state"] == "success")
    assert "canary" in _log_text(client, "deploy_model", deployed["dag_run_id"], "decide")
    instance = client.get(
        f"/api/v2/dags/train_model/dagRuns/{trained['dag_run_id']}/taskInstances/evaluate_gate"
    ).json()
    assert instance["duration"] and instance["duration"] > 0 and instance["end_date"] >= instance["start_date"]


def _screenshots(settings) -> Path:
    folder = settings.root / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_person_in_chromium_logs_in_and_finds_the_evidence(ui):
    """The real login page, the fraudflow entry of the navigation, a task's extra link and the
    log of a task ``make demo``'s code ran, in headless Chromium; screenshots under the home."""
    from tests.browser import browser_page, log_in

    settings, live, client = ui
    shots = _screenshots(settings)
    failed_ingest = next(r for r in _runs(client, "ingest_transactions") if r["state"] == "failed")
    task_page = f"{live.api_url}/dags/ingest_transactions/runs/{failed_ingest['dag_run_id']}/tasks/validate_batch"
    with browser_page() as page:
        log_in(page, live.api_url, "admin", PASSWORD)
        page.goto(f"{live.api_url}/plugin/fraudflow")  # the "fraudflow" entry of the navigation
        frame = page.frame_locator("iframe")
        frame.get_by_text("Serving now").wait_for(timeout=30_000)
        assert frame.locator(f"#quarantine-{QUARANTINED_DAY}").count() == 1
        champion = registry.aliases(settings)[registry.CHAMPION]
        assert "champion" in frame.locator(f"#v{champion}").inner_text()
        page.screenshot(path=shots / "fraudflow-page.png")

        page.goto(f"{task_page}/details")
        link = page.get_by_role("link", name="GX Data Docs")
        link.wait_for(timeout=30_000)
        link.click()  # same-origin evidence opens in the same tab (Airflow's UI: target _self)
        page.wait_for_url("**/fraudflow/artifacts/gx/**", timeout=30_000)
        assert "Data documentation compiled by Great Expectations" in page.content()
        assert "TX_AMOUNT" in page.content()
        page.screenshot(path=shots / "validate-batch-data-docs.png")

        page.goto(task_page)  # the Logs tab of a task run by dag.test() (make demo's code)
        page.get_by_text("quarantined to").first.wait_for(timeout=30_000)
        page.screenshot(path=shots / "validate-batch-log.png")
    assert {p.name for p in shots.iterdir()} >= {"fraudflow-page.png", "validate-batch-log.png"}


def _register_champion_copy(settings, reason: str) -> str:
    """A challenger that is the champion's own model (as make demo's drill does): the subject is
    the approval, not the model."""
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    dropped = (tags.ROLLOUT, tags.ROLLOUT_REASON, tags.TEST_SCORES, tags.APPROVAL, tags.APPROVED_BY)
    copy = {k: v for k, v in champion.tags.items() if k not in dropped} | {tags.REASON: reason}
    return registry.register_challenger(settings, model_uri=champion.source, run_id=champion.run_id, tags=copy).version


def _wait_for_request(client, dag_id: str = "deploy_model", timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = client.get(
            f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails", params={"response_received": False}
        ).json()["hitl_details"]
        if pending:
            return pending[0]
        time.sleep(1)
    raise TimeoutError("deploy_model never asked for approval")


@pytest.fixture()
def approval_rollout(ui, monkeypatch):
    """deploy_model as the production profile runs it (approval required), against a live
    scoring service; yields a function running one rollout while ``answer(request)`` responds."""
    from fraudflow.deployment.service_process import ServingProcess
    from fraudflow.orchestration.runtime import load_dag, run_dag

    settings, live, client = ui
    for key, value in {
        "FRAUDFLOW_HOME": str(settings.root),
        "FRAUDFLOW_REQUIRE_APPROVAL": "true",
        "FRAUDFLOW_ROLLOUT_MIN_SHADOW_REQUESTS": "50",
        "FRAUDFLOW_ROLLOUT_MIN_CANARY_REQUESTS": "20",
    }.items():
        monkeypatch.setenv(key, value)
    service = ServingProcess(settings).start()
    monkeypatch.setenv("FRAUDFLOW_SERVING_URL", service.url)

    def rollout(version: str, answer) -> tuple:
        failures: list[BaseException] = []

        def respond():
            try:
                answer(_wait_for_request(client))
            except BaseException as exc:  # surfaced below, not lost in the thread
                failures.append(exc)

        responder = threading.Thread(target=respond)
        responder.start()
        conf = {"build_bento": False, "shadow_requests": 60, "canary_requests": 60}
        outcome = run_dag(load_dag("deploy_model"), conf=conf)
        responder.join(timeout=120)
        assert not failures, failures
        return outcome, {t.task_id: t.state for t in outcome.tasks}

    try:
        yield settings, live, client, rollout
    finally:
        service.stop()


def test_approval_reject_through_the_hitl_api_rolls_back(approval_rollout):
    settings, live, client, rollout = approval_rollout
    version = _register_champion_copy(settings, "approval test: to be rejected")
    before = registry.aliases(settings)[registry.CHAMPION]

    def reject(request):
        run_id = request["task_instance"]["dag_run_id"]
        assert request["task_instance"]["task_id"] == "approve_promotion"
        assert f"Promote fraud-detector v{version}" in request["subject"] and "canary | passed" in request["body"]
        time.sleep(2)  # the UI's answer comes from a person, seconds later
        answer = client.patch(  # the call the UI's Reject button makes
            f"/api/v2/dags/deploy_model/dagRuns/{run_id}/taskInstances/approve_promotion/-1/hitlDetails",
            json={"chosen_options": ["Reject"], "params_input": {}},
        )
        assert answer.status_code == 200 and answer.json()["responded_by"]["name"] == "admin", answer.text

    outcome, states = rollout(version, reject)
    assert outcome.state == "success", outcome
    assert states["approve_promotion"] == "success" and states["rollback"] == "success"
    assert states["promote"] == "skipped"
    assert registry.aliases(settings).get(registry.CHAMPION) == before
    assert registry.CHALLENGER not in registry.aliases(settings)
    rejected = registry.get_version(settings, version).tags
    assert rejected[tags.ROLLOUT] == "rolled_back" and rejected[tags.ROLLOUT_REASON] == "approval: rejected by admin"
    assert rejected[tags.APPROVAL] == "rejected" and rejected[tags.APPROVED_BY] == "admin"


def test_approval_in_the_browser_promotes_and_records_the_approver(approval_rollout):
    """A person opens the waiting task's Required Action in the Airflow UI, reads the evidence
    and clicks Approve (the UI calls the HITL API); the version is promoted, naming them."""
    from tests.browser import browser_page, log_in

    settings, live, client, rollout = approval_rollout
    version = _register_champion_copy(settings, "approval test: to be approved")
    before = registry.aliases(settings)[registry.CHAMPION]
    shot = _screenshots(settings) / "approval-prompt.png"

    def approve_in_the_ui(request):
        run_id = request["task_instance"]["dag_run_id"]
        with browser_page() as page:
            log_in(page, live.api_url, "admin", PASSWORD)
            page.goto(f"{live.api_url}/dags/deploy_model/runs/{run_id}/tasks/approve_promotion/required_actions")
            page.get_by_text(f"Promote fraud-detector v{version} to champion?").wait_for(timeout=30_000)
            assert page.get_by_text("passed shadow and canary").count() == 1
            page.screenshot(path=shot)
            page.get_by_role("button", name="Approve").click()
            page.wait_for_timeout(1000)

    outcome, states = rollout(version, approve_in_the_ui)
    assert outcome.state == "success", outcome
    assert states["promote"] == "success" and states["rollback"] == "skipped"
    moved = registry.aliases(settings)
    assert moved[registry.CHAMPION] == version and moved[registry.PREVIOUS] == before
    promoted = registry.get_version(settings, version).tags
    assert promoted[tags.ROLLOUT] == "promoted"
    assert promoted[tags.APPROVAL] == "approved" and promoted[tags.APPROVED_BY] == "admin"
    decision = [json.loads(x) for x in (settings.serving_dir / "decisions.jsonl").read_text().splitlines()][-2]
    assert decision["stage"] == "approval" and decision["by"] == "admin" and decision["version"] == version
    assert shot.stat().st_size > 10_000


def test_a_quarantined_file_is_released_from_the_ui_and_ingested_again(ui, monkeypatch):
    """The quarantine triggered review_quarantine; the sender corrects the file in the
    quarantine folder, a person answers Release (the UI's HITL call); the day is ingested again."""
    from fraudflow.ingestion.quarantine import list_quarantined, quarantine_folder
    from fraudflow.lake import list_partitions
    from fraudflow.orchestration.runtime import run_queued

    settings, live, client = ui
    monkeypatch.setenv("FRAUDFLOW_HOME", str(settings.root))
    (record,) = [r for r in list_quarantined(settings) if r.day == QUARANTINED_DAY]
    corrected = _the_next_day()
    corrected.to_parquet(quarantine_folder(settings, QUARANTINED_DAY) / Path(record.file).name, index=False)

    def release(request):
        assert request["task_instance"]["task_id"] == "release_or_keep"
        assert "quarantined at the validation stage" in request["body"] and "TX_AMOUNT" in request["body"]
        time.sleep(2)
        answer = client.patch(
            f"/api/v2/dags/review_quarantine/dagRuns/{request['task_instance']['dag_run_id']}"
            "/taskInstances/release_or_keep/-1/hitlDetails",
            json={"chosen_options": ["Release"], "params_input": {}},
        )
        assert answer.status_code == 200, answer.text

    failures: list[BaseException] = []

    def respond():
        try:
            release(_wait_for_request(client, "review_quarantine"))
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    responder = threading.Thread(target=respond)
    responder.start()
    (review,) = run_queued("review_quarantine")  # the run the quarantine triggered
    responder.join(timeout=60)
    assert not failures, failures
    assert review.state == "success" and {t.task_id: t.state for t in review.tasks}["reingest_day"] == "success"
    (reingest,) = run_queued("ingest_transactions")
    assert reingest.state == "success", reingest
    assert QUARANTINED_DAY in list_partitions(settings)
    assert QUARANTINED_DAY not in [r.day for r in list_quarantined(settings)]


def _serve(args: list[str], url: str, env: dict, timeout: float = 90):
    """Start a UI command (its own process group), wait until ``url`` answers."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("fraudflow")), *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return proc, lambda: (os.killpg(proc.pid, signal.SIGTERM), proc.wait(30))
        except httpx.HTTPError:
            time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise TimeoutError(f"{args} never answered at {url} (exit {proc.poll()})")


def test_make_mlflow_shows_the_card_as_the_description_and_make_evidently_the_drift_history(ui):
    from fraudflow.deployment.service_process import free_port

    settings, live, client = ui
    env = {"FRAUDFLOW_HOME": str(settings.root)}
    mlflow_url = f"http://127.0.0.1:{free_port()}"
    proc, stop = _serve(["mlflow-ui"], f"{mlflow_url}/health", env | {"FRAUDFLOW_MLFLOW_UI_URL": mlflow_url})
    try:
        version = httpx.get(
            f"{mlflow_url}/ajax-api/2.0/mlflow/model-versions/get", params={"name": "fraud-detector", "version": "2"}
        ).json()["model_version"]
        assert version["description"].startswith("# Model card: fraud-detector v2")
    finally:
        stop()
    port = free_port()
    proc, stop = _serve(["evidently-ui", "--port", str(port)], f"http://127.0.0.1:{port}/api/projects", env)
    try:
        projects = httpx.get(f"http://127.0.0.1:{port}/api/projects").json()
        (project,) = [p for p in projects if p["name"] == "fraudflow drift"]
        snapshots = httpx.get(f"http://127.0.0.1:{port}/api/projects/{project['id']}/snapshots").json()
        assert len(snapshots) >= 2  # the loop's monitoring run: input and prediction drift
    finally:
        stop()
