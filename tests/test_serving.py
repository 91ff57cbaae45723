"""The BentoML scoring service, as real `bentoml serve` processes spoken to over HTTP.

One small home (lake, features, Feast online store, a registered champion; the session's
``serving_home``) is built without Airflow; three servers start on it side by side: the
normal one, one whose online store is gone (degraded mode) and one behind a bearer token.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest

from fraudflow import registry, tags
from fraudflow.features.compute import CUSTOMER_FEATURES, TERMINAL_FEATURES, feature_dir
from fraudflow.serving.scoring import ID_PATTERN, FeatureLookup, Scorer, Transaction

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOKEN = "test-token-42"
METRICS = (
    "fraudflow_request_duration_seconds",
    "fraudflow_fraud_score",
    "fraudflow_degraded_total",
    "fraudflow_errors_total",
    "fraudflow_requests_total",
)


class Server:
    """One `bentoml serve` process group on a free loopback port."""

    def __init__(self, name: str, home: Path, workdir: Path, **env: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        environ = {k: v for k, v in os.environ.items() if k not in ("FRAUDFLOW_API_TOKEN", "FRAUDFLOW_MODEL_URI")}
        environ.update(
            FRAUDFLOW_HOME=str(home),
            BENTOML_HOME=str(workdir / f"bentoml-{name}"),
            BENTOML_DO_NOT_TRACK="True",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **env,
        )
        command = [str(BIN / "bentoml"), "serve", "service:FraudScoring", "--working-dir", "services/fraud_scoring"]
        self.proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=environ,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops the workers too
        )

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if "leaked" not in line and "nanobind" not in line][-lines:])

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"bentoml serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        pytest.fail(f"{self.url}/readyz not 200 after {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM the process group, then check the workers left too: BentoML's arbiter
        (circus) starts each worker in a session of its own, out of reach of killpg."""
        try:
            workers = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            workers = []
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        assert self.proc.returncode is not None
        _, alive = psutil.wait_procs(workers, timeout=15)
        for worker in alive:
            worker.kill()
        assert not alive, f"workers {[w.pid for w in alive]} outlived bentoml serve"


@pytest.fixture(scope="module")
def servers(serving_home, tmp_path_factory):
    settings, _ = serving_home
    workdir = tmp_path_factory.mktemp("servers")
    # A home whose online store is gone: the registry and MLflow are copies, the model's
    # artifacts are still read from the original home (absolute paths in the MLflow DB).
    broken = workdir / "home-without-online-store"
    shutil.copytree(settings.root / "mlflow", broken / "mlflow")
    (broken / "feast").mkdir(parents=True)
    shutil.copy2(settings.feast_dir / "registry.db", broken / "feast" / "registry.db")
    started = {
        "main": Server("main", settings.root, workdir),
        "no_store": Server("no_store", broken, workdir),
        # Also tiny limits: a 4 KB body and one request in flight (one worker).
        "token": Server(
            "token",
            settings.root,
            workdir,
            FRAUDFLOW_API_TOKEN=TOKEN,
            FRAUDFLOW_SERVING_MAX_BODY_BYTES="4096",
            FRAUDFLOW_SERVING_MAX_IN_FLIGHT="1",
        ),
    }
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _payload(row, **overrides) -> dict:
    body = {
        "transaction_id": int(row.TRANSACTION_ID),
        "tx_datetime": pd.Timestamp(row.TX_DATETIME).isoformat(),
        "customer_id": str(row.CUSTOMER_ID),
        "terminal_id": str(row.TERMINAL_ID),
        "tx_amount": float(row.TX_AMOUNT),
    }
    return {**body, **overrides}


def _latest_features(settings, table: str, entity: str, key: str, columns: list[str]) -> np.ndarray:
    rows = pd.concat(pd.read_parquet(p) for p in sorted(feature_dir(settings, table).glob("date=*/part-0.parquet")))
    mine = rows[rows[entity] == key].sort_values("event_timestamp")
    return mine[columns].iloc[-1].to_numpy(dtype=np.float64)


def test_score_uses_online_features_and_the_champion(serving_home, servers):
    settings, frame = serving_home
    row = frame.iloc[-1]  # the last transaction: its customer's and terminal's latest feature rows
    response = httpx.post(f"{servers['main'].url}/score", json=_payload(row), timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    assert body["degraded"] is False and body["degraded_reason"] is None
    assert 0.0 <= body["fraud_probability"] <= 1.0
    assert body["model_name"] == registry.MODEL_NAME and body["model_version"] == champion.version
    assert body["served_by"] == "champion" and body["transaction_id"] == int(row.TRANSACTION_ID)
    assert len(body["request_id"]) == 32
    threshold = float(champion.tags[tags.THRESHOLD])
    assert body["is_fraud"] == (body["fraud_probability"] >= threshold)

    # In-process, same code: the online store holds the feature tables' latest rows.
    lookup, scorer = FeatureLookup(settings), Scorer(settings=settings)
    X, degraded, _ = lookup.lookup([Transaction.model_validate(_payload(row))])
    assert not degraded.any()
    customer = _latest_features(settings, "customer", "CUSTOMER_ID", row.CUSTOMER_ID, CUSTOMER_FEATURES)
    terminal = _latest_features(settings, "terminal", "TERMINAL_ID", row.TERMINAL_ID, TERMINAL_FEATURES)
    np.testing.assert_allclose(X[CUSTOMER_FEATURES].to_numpy()[0], customer)
    np.testing.assert_allclose(X[TERMINAL_FEATURES].to_numpy()[0], terminal)
    assert scorer.version == champion.version
    assert abs(scorer.predict(X)[0] - body["fraud_probability"]) < 1e-6


def test_batch_equals_single_answers(serving_home, servers):
    _, frame = serving_home
    rows = [_payload(r) for r in frame.tail(48).itertuples()]
    rows += [_payload(frame.iloc[0], customer_id="nobody"), _payload(frame.iloc[1], terminal_id="nowhere")]
    url = servers["main"].url
    batch = httpx.post(f"{url}/score_batch", json={"transactions": rows}, timeout=30)
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert len(results) == 50 and len({r["request_id"] for r in results}) == 1
    with httpx.Client(base_url=url, timeout=10) as client:
        singles = [client.post("/score", json=r).json() for r in rows]
    np.testing.assert_allclose(
        [r["fraud_probability"] for r in results], [s["fraud_probability"] for s in singles], atol=1e-9
    )
    assert [r["transaction_id"] for r in results] == [r["transaction_id"] for r in rows]
    assert [r["degraded"] for r in results] == [False] * 48 + [True, True]
    too_many = httpx.post(f"{url}/score_batch", json={"transactions": rows * 21}, timeout=30)
    assert too_many.status_code == 400 and "transactions" in too_many.text


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("malformed JSON", "Invalid JSON"),
        ("missing customer_id", "customer_id"),
        ("tx_amount abc", "tx_amount"),
        ("tx_amount -1", "tx_amount"),
        ("tx_datetime 1700", "tx_datetime"),
        ("extra field", "merchant_name"),
        ("empty customer_id", "customer_id"),
        ("multipart body", "content-type"),
        ("tx_amount true", "tx_amount"),
        ("tx_amount as text", "tx_amount"),
        ("NUL in customer_id", "customer_id"),
        ("bidi override in terminal_id", "terminal_id"),
        ("transaction_id 2**80", "transaction_id"),
    ],
)
def test_invalid_input_is_a_4xx_naming_the_field(serving_home, servers, case, field):
    _, frame = serving_home
    good = _payload(frame.iloc[-1])
    without_customer = {k: v for k, v in good.items() if k != "customer_id"}
    requests = {
        "malformed JSON": {"content": b'{"transaction_id": 1,', "headers": {"content-type": "application/json"}},
        "missing customer_id": {"json": without_customer},
        "tx_amount abc": {"json": {**good, "tx_amount": "abc"}},
        "tx_amount -1": {"json": {**good, "tx_amount": -1}},
        "tx_datetime 1700": {"json": {**good, "tx_datetime": "1700-01-01T00:00:00"}},
        "extra field": {"json": {**good, "merchant_name": "x"}},
        "empty customer_id": {"json": {**good, "customer_id": "  "}},
        "multipart body": {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data; boundary=y"}},
        "tx_amount true": {"json": {**good, "tx_amount": True}},  # was scored as 1.0
        "tx_amount as text": {"json": {**good, "tx_amount": "12.5"}},  # was accepted
        "NUL in customer_id": {"json": {**good, "customer_id": "c\u0000d"}},
        "bidi override in terminal_id": {"json": {**good, "terminal_id": "t\u202eevil"}},
        "transaction_id 2**80": {"json": {**good, "transaction_id": 2**80}},  # was echoed back
    }
    response = httpx.post(f"{servers['main'].url}/score", timeout=10, **requests[case])
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert field in response.text, response.text


def _hostile(good: dict) -> dict[str, tuple[str, bytes, str]]:
    """case -> (path, raw body, what the 4xx must name)."""
    raw = json.dumps(good)
    batch = lambda n: json.dumps({"transactions": [good] * n}).encode()  # noqa: E731
    return {
        "2 MB body": ("/score", json.dumps({**good, "customer_id": "x" * 2_000_000}).encode(), "limit"),
        "10k-item batch": ("/score_batch", batch(10_000), "limit"),
        "2k-item batch": ("/score_batch", batch(2_000), "transactions"),
        "deep nesting": ("/score", b'{"transaction_id": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "recursion limit"),
        "NaN literal": ("/score", raw.replace(str(good["tx_amount"]), "NaN").encode(), "tx_amount"),
        "Infinity literal": ("/score", raw.replace(str(good["tx_amount"]), "Infinity").encode(), "tx_amount"),
        "-Infinity literal": ("/score", raw.replace(str(good["tx_amount"]), "-Infinity").encode(), "tx_amount"),
        "bool customer_id": ("/score", json.dumps({**good, "customer_id": True}).encode(), "customer_id"),
        "control characters": ("/score", json.dumps({**good, "transaction_id": "a\u0007\u001b[2J"}).encode(), "_id"),
        "JSON null": ("/score", b"null", "should be an object"),
        "JSON array": ("/score_batch", json.dumps([good]).encode(), "should be an object"),
        "empty body": ("/score", b"", "transaction"),
    }


@pytest.mark.parametrize("case", list(_hostile({"tx_amount": 1.5})))
def test_hostile_payloads_are_a_4xx_naming_the_field_or_limit(serving_home, servers, case):
    _, frame = serving_home
    path, body, named = _hostile(_payload(frame.iloc[-1]))[case]
    headers = {"content-type": "application/json"}
    response = httpx.post(f"{servers['main'].url}{path}", content=body, headers=headers, timeout=30)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    assert named in response.text, response.text[:500]


def test_unknown_entities_are_scored_degraded(serving_home, servers):
    _, frame = serving_home
    url = servers["main"].url
    body = httpx.post(f"{url}/score", json=_payload(frame.iloc[-1], customer_id="card-never-seen"), timeout=10).json()
    assert body["degraded"] is True and body["degraded_reason"] == "unknown customer"
    assert 0.0 <= body["fraud_probability"] <= 1.0
    body = httpx.post(f"{url}/score", json=_payload(frame.iloc[-1], terminal_id=987654321), timeout=10).json()
    assert body["degraded"] is True and body["degraded_reason"] == "unknown terminal"


def test_missing_online_store_degrades_instead_of_failing(serving_home, servers):
    _, frame = serving_home
    url = servers["no_store"].url
    response = httpx.post(f"{url}/score", json=_payload(frame.iloc[-1]), timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["degraded"] is True and body["degraded_reason"].startswith("feature store unavailable: ")
    batch = httpx.post(f"{url}/score_batch", json={"transactions": [_payload(frame.iloc[-1])] * 3}, timeout=10)
    assert batch.status_code == 200 and all(r["degraded"] for r in batch.json()["results"])
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["feature_store"] == "unavailable" and health["status"] == "degraded"
    assert health["degraded_reasons"][0].startswith("feature store unavailable")
    main = httpx.get(f"{servers['main'].url}/healthz", timeout=10).json()
    assert main["feature_store"] == "ok" and (main["status"], main["degraded_reasons"]) == ("ok", [])


def test_a_service_on_default_features_is_alerted(serving_home, servers, tmp_path, monkeypatch):
    """watch_serving's check: a service answering every request on default features (its store
    is gone) raises immediate alerts, though no request failed; first-seen cards, exact on the
    request alone, raise nothing."""
    from fraudflow.monitoring.alerts import check_service
    from fraudflow.settings import get_settings

    _, frame = serving_home
    monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / "watcher"))
    settings = get_settings()

    def check_after_25_new_cards(name: str):
        check_service(settings, servers[name].url)  # baseline: whatever earlier tests sent
        with httpx.Client(base_url=servers[name].url, timeout=10) as client:
            for i in range(25):
                assert client.post("/score", json=_payload(frame.iloc[-1 - i], customer_id=f"new-{i}")).is_success
        return check_service(settings, servers[name].url)

    health, alerts = check_after_25_new_cards("no_store")
    assert health.up and health.errors == 0 and health.degraded == 25 and health.degraded_share == 1.0
    assert {a.check for a in alerts} == {"degraded_share", "service_degraded"}
    assert "100.0% of 25 answers scored on default features" in alerts[0].summary
    health, alerts = check_after_25_new_cards("main")  # 25 unknown customers: exact, not degraded
    assert (health.degraded, health.degraded_reasons, alerts) == (0, [], [])


def test_bearer_token(serving_home, servers):
    _, frame = serving_home
    url, payload = servers["token"].url, _payload(frame.iloc[-1])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(f"{url}/score", json=payload, headers=headers, timeout=10)
        assert response.status_code == 401, response.text
        assert response.json() == {"error": "missing or invalid bearer token"}
    assert httpx.post(f"{url}/score_batch", json={"transactions": [payload]}, timeout=10).status_code == 401
    assert httpx.get(f"{url}/docs.json", timeout=10).status_code == 401
    authorized = httpx.post(f"{url}/score", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert authorized.status_code == 200 and authorized.json()["degraded"] is False
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        assert httpx.get(f"{url}{path}", timeout=10).status_code == 200, path
    assert httpx.post(f"{servers['main'].url}/score", json=payload, timeout=10).status_code == 200  # no token set


def test_body_limit_and_requests_in_flight_are_bounded(serving_home, servers):
    """A body over the limit is answered 413 before it is read (declared or chunked); past the
    in-flight bound the answer is 503 with Retry-After; the service then answers again."""
    _, frame = serving_home
    server, auth = servers["token"], {"Authorization": f"Bearer {TOKEN}"}
    big = json.dumps({"transactions": [_payload(frame.iloc[-1])] * 40}).encode()  # > 4 KB
    declared = httpx.post(f"{server.url}/score_batch", content=big, headers=auth, timeout=10)
    chunked = httpx.post(f"{server.url}/score_batch", content=iter([big[:3000], big[3000:]]), headers=auth, timeout=10)
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert response.json() == {"error": "request body larger than 4096 bytes", "field": "body", "limit": 4096}
    assert "transfer-encoding" in chunked.request.headers  # really sent without a length

    with socket.create_connection(("127.0.0.1", server.port)) as slow:  # one request, body pending
        head = f"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        slow.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 300\r\n\r\n{{".encode())
        time.sleep(0.5)
        busy = httpx.post(f"{server.url}/score", json=_payload(frame.iloc[-1]), headers=auth, timeout=10)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
    assert busy.json() == {"error": "more than 1 requests in flight; retry", "limit": 1}
    deadline = time.monotonic() + 10
    while (again := httpx.post(f"{server.url}/score", json=_payload(frame.iloc[-1]), headers=auth)).status_code == 503:
        assert time.monotonic() < deadline, "the in-flight slot was never freed"
        time.sleep(0.1)
    assert again.status_code == 200, again.text
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'fraudflow_errors_total{endpoint="/score",status="503"}' in text
    assert 'fraudflow_errors_total{endpoint="/score_batch",status="413"}' in text


def test_metrics_carry_fraudflow_series(serving_home, servers):
    settings, frame = serving_home
    url = servers["main"].url
    httpx.post(f"{url}/score", json=_payload(frame.iloc[-1]), timeout=10)
    httpx.post(f"{url}/score", json=_payload(frame.iloc[-1], customer_id="nobody-here"), timeout=10)
    httpx.post(f"{url}/score", json={"tx_amount": -1}, timeout=10)
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for name in METRICS:
        assert name in text, name
    version = registry.version_by_alias(settings, registry.CHAMPION).version
    assert f'fraudflow_request_duration_seconds_count{{endpoint="/score",model_version="{version}"}}' in text
    assert 'fraudflow_requests_total{endpoint="/score",served_by="champion"}' in text
    assert 'fraudflow_degraded_total{reason="unknown customer"}' in text
    assert 'fraudflow_errors_total{endpoint="/score",status="400"}' in text
    assert "bentoml_service_request_total" in text  # BentoML's own series are still there
    health = httpx.get(f"{url}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["model_version"] == version and health["feature_store"] == "ok"
    assert health["mode"] == "champion" and health["challenger_version"] is None


def test_a_quiet_service_still_follows_the_deployment_state(serving_home, servers):
    """No request arrives: the service must still apply a new state (deploy_model waits on
    /healthz before it replays any traffic). Found by the closed-loop test: it used to switch
    only when a scoring request came in."""
    from fraudflow.deployment.controller import wait_for_revision
    from fraudflow.serving.state import read_state, write_state

    settings, _ = serving_home
    state = write_state(settings, read_state(settings).model_copy(update={"reason": "quiet-service test"}))
    wait_for_revision(servers["main"].url, state.revision, timeout=10)
    assert httpx.get(f"{servers['main'].url}/healthz", timeout=5).json()["deployment_revision"] == state.revision


def test_error_rate_over_threshold_is_an_immediate_alert(serving_home, servers, tmp_path, monkeypatch):
    """watch_serving's check against the live service: the error rate counts only the requests
    answered since the previous check, from the service's own Prometheus counters."""
    from fraudflow.monitoring.alerts import Tier, check_service, send_alert
    from fraudflow.settings import get_settings
    from tests.webhook import WebhookReceiver

    _, frame = serving_home
    url = servers["main"].url
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / "watcher"))
        monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", receiver.url)
        settings = get_settings()
        health, _ = check_service(settings, url)  # baseline: whatever earlier tests sent (4xx included)
        assert health.up
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(30):
                client.post("/score", json=_payload(frame.iloc[-1 - i]))
        health, alerts = check_service(settings, url)
        assert health.up and health.answered == 30 and health.errors == 0 and alerts == []
        with httpx.Client(base_url=url, timeout=10) as client:
            for i in range(20):
                client.post("/score", json=_payload(frame.iloc[-1 - i]))
            for _ in range(10):
                assert client.post("/score", json={"tx_amount": -1}).status_code == 400
        health, alerts = check_service(settings, url)
        assert (health.answered, health.errors) == (30, 10)
        (alert,) = alerts
        assert alert.tier is Tier.immediate and alert.check == "error_rate"
        assert send_alert(settings, alert).webhook_status == "200"
    assert receiver.received[0]["check"] == "error_rate"
    assert "33.3% of 30 requests failed" in receiver.received[0]["summary"]

    # A killed watcher can leave its counters file torn: the next check counts from the service's
    # start, as a first check does, instead of failing.
    from fraudflow.monitoring.alerts import _counters_path

    counters = _counters_path(settings)
    counters.write_text(counters.read_text()[:9])
    health, _ = check_service(settings, url)
    assert health.up and health.answered >= 60 and json.loads(counters.read_text())["url"] == url


def test_schemathesis_all_checks_find_no_issue(servers, tmp_path):
    """Schemathesis with every check (server errors, response schema conformance, valid data
    accepted, invalid data rejected, documented status codes...) and 500 examples per operation
    against the served /docs.json: what the document says is what the API does."""
    command = [
        str(BIN / "schemathesis"),
        "run",
        f"{servers['main'].url}/docs.json",
        "--checks",
        "all",
        "--max-examples",
        "500",
        "--seed",
        "7",
        "--generation-database",
        "none",
        "--no-color",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout


def test_the_openapi_document_describes_the_errors_the_api_returns(serving_home, servers):
    """Error bodies, as served: a 400's detail is a list of field errors (BentoML documents a
    string), the middleware's own answers are documented, string ids are in the request schema."""
    spec = httpx.get(f"{servers['main'].url}/docs.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    detail = schemas["InvalidArgument"]["properties"]["detail"]["anyOf"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}} in detail
    for path in ("/score", "/score_batch"):
        operation = spec["paths"][path]["post"]
        assert {"401", "413", "415", "503"} <= set(operation["responses"]) and operation["requestBody"]["required"]
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    request = schemas[
        spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    ]
    assert {"type": "string", "pattern": ID_PATTERN} in request["properties"]["transaction_id"]["anyOf"]
    assert request["properties"]["tx_amount"]["maximum"] == 50_000.0
    _, frame = serving_home
    answer = httpx.post(f"{servers['main'].url}/score", json={**_payload(frame.iloc[-1]), "tx_amount": -1}, timeout=10)
    assert answer.status_code == 400 and answer.json()["detail"][0]["loc"] == ["tx_amount"]


def test_bento_requirements_are_the_repo_pins():
    """services/fraud_scoring/requirements.txt copies constraints.txt pins (BentoML refuses a
    requirements file outside the build context): they must not drift apart."""

    def pins(path: Path) -> dict[str, str]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return {name.lower().replace("_", "-"): v for name, _, v in (x.partition("==") for x in lines if "==" in x)}

    bento, repo = pins(REPO / "services/fraud_scoring/requirements.txt"), pins(REPO / "constraints.txt")
    assert bento and {k: v for k, v in bento.items() if repo.get(k) != v} == {}


def test_fast_xgboost_path_equals_the_flavour_predict_proba(serving_home):
    """Scorer's inplace_predict shortcut returns what the MLflow flavour's predict_proba does."""
    settings, lake = serving_home
    from fraudflow.serving.scoring import FeatureLookup, Scorer, Transaction

    scorer = Scorer("models:/fraud-detector@champion", settings)
    assert scorer._booster is not None  # the shortcut is really taken
    sample = lake.sample(300, random_state=1)
    transactions = [
        Transaction(
            transaction_id=int(r.TRANSACTION_ID),
            tx_datetime=r.TX_DATETIME,
            customer_id=r.CUSTOMER_ID,
            terminal_id=r.TERMINAL_ID,
            tx_amount=float(r.TX_AMOUNT),
        )
        for r in sample.itertuples(index=False)
    ]
    features, _, _ = FeatureLookup(settings).lookup(transactions)
    np.testing.assert_allclose(scorer.predict(features), scorer.spec.predict_proba(scorer.model, features), rtol=1e-6)
