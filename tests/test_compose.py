"""The production topology's files, checked without a Docker engine: docker-compose.yml, Dockerfile,
.dockerignore, .env.example and deploy/ (PostgreSQL init, Prometheus, Grafana).

``SERVICES`` is the documented list of compose services; README.md must name every one of them
(``test_readme_lists_every_service``). When the ``docker`` CLI and its compose plugin are installed,
``docker compose config -q`` validates the file against the compose spec as well.
"""

from __future__ import annotations

import json
import os
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest
import yaml

from fraudflow.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY = REPO / "deploy"

# Every service of docker-compose.yml, in start-up order.
SERVICES = (
    "postgres",
    "redis",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "mlflow",
    "scoring",
    "prometheus",
    "grafana",
    "spark-master",
    "spark-worker",
    "spark-connect",
)
ONE_SHOT = frozenset({"airflow-init"})  # runs to completion; every other service is long-running
AIRFLOW = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker")
FRAUDFLOW_IMAGE = ("airflow-init", *AIRFLOW, "mlflow", "scoring")  # the Dockerfile's image
FRAUDFLOW_HOME = "/data/fraudflow"

# The environment every fraudflow container gets (the settings contract). None: a value from .env.
CONTRACT_ENV = {
    "FRAUDFLOW_PROFILE": "production",
    "FRAUDFLOW_HOME": FRAUDFLOW_HOME,
    "FRAUDFLOW_POSTGRES_URL": None,
    "FRAUDFLOW_REDIS_URL": "redis://redis:6379",
    "FRAUDFLOW_MLFLOW_SERVER_URL": "http://mlflow:5000",
    "FRAUDFLOW_AIRFLOW_API_URL": "http://airflow-api-server:8080",
    "FRAUDFLOW_AIRFLOW_JWT_SECRET": None,
    "FRAUDFLOW_SERVING_URL": "http://scoring:3000",
    "FRAUDFLOW_SERVING_AUTOSTART": "false",
    "FRAUDFLOW_API_TOKEN": None,
    "FRAUDFLOW_ALERT_WEBHOOK_URL": None,
    "FRAUDFLOW_ENGINE": None,
    "FRAUDFLOW_SPARK_MASTER": "sc://spark-connect:15002",
}

# (dependency, dependent, the depends_on condition required)
START_ORDER = [
    ("postgres", "airflow-init", "service_healthy"),
    ("redis", "airflow-init", "service_healthy"),
    *((dep, s, "service_healthy") for s in AIRFLOW for dep in ("postgres", "redis")),
    *(("airflow-init", s, "service_completed_successfully") for s in AIRFLOW),
    ("airflow-api-server", "airflow-worker", "service_healthy"),
    ("postgres", "mlflow", "service_healthy"),
    ("mlflow", "scoring", "service_healthy"),
    ("redis", "scoring", "service_healthy"),
    # started, not healthy: scoring is unhealthy until a champion is registered, and Prometheus
    # should run (and record the target as down) meanwhile.
    ("scoring", "prometheus", "service_started"),
    ("prometheus", "grafana", "service_healthy"),
    ("spark-master", "spark-worker", "service_healthy"),
    ("spark-worker", "spark-connect", "service_healthy"),
]
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

# What each service's healthcheck probes (a substring of its test).
HEALTH_PROBES = {
    "postgres": "pg_isready",
    "redis": "redis-cli ping",
    "airflow-api-server": "http://localhost:8080/api/v2/monitor/health",
    "airflow-scheduler": "jobs check --job-type SchedulerJob",
    "airflow-dag-processor": "jobs check --job-type DagProcessorJob",
    "airflow-triggerer": "jobs check --job-type TriggererJob",
    "airflow-worker": "inspect ping",
    "mlflow": "http://localhost:5000/health",
    "scoring": "http://localhost:3000/readyz",
    "prometheus": "http://localhost:9090/-/ready",
    "grafana": "http://localhost:3000/api/health",
    "spark-master": "/dev/tcp/localhost/7077",
    "spark-worker": "/dev/tcp/localhost/8081",
    "spark-connect": "/dev/tcp/localhost/15002",
}

PUBLISHED = {"airflow-api-server": 8080, "mlflow": 5000, "scoring": 3000, "prometheus": 9090, "grafana": 3001}

METRIC_FAMILIES = (
    "fraudflow_request_duration_seconds",
    "fraudflow_fraud_score",
    "fraudflow_requests_total",
    "fraudflow_errors_total",
    "fraudflow_degraded_total",
)

_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution (the forms this file uses), with ``env`` as the .env file."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        value = env.get(name)
        unset = value is None or (op.startswith(":") and not value)
        if op.endswith("?"):
            assert not unset, f"${{{name}}} is required ({arg})"
        if op.endswith("-"):
            return arg if unset else value
        if op.endswith("+"):
            return "" if unset else arg
        return value or ""

    return _INTERPOLATION.sub(one, text).replace("$$", "$")


def _depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _repo_mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of every bind mount from the repo."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume.get("target", "")
        else:
            source, _, rest = volume.partition(":")
            target = rest.split(":")[0]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def _dashboard_exprs(panels: list[dict]) -> list[str]:
    exprs = []
    for panel in panels:
        exprs += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
        exprs += _dashboard_exprs(panel.get("panels", []))
    return exprs


# -- services and start-up order ---------------------------------------------------------------


def test_service_set_is_the_documented_one():
    assert sorted(_services()) == sorted(SERVICES)


def test_long_running_services_have_healthchecks():
    services = _services()
    missing = [name for name in SERVICES if name not in ONE_SHOT and not services[name].get("healthcheck")]
    assert not missing, f"long-running services without a healthcheck: {missing}"
    for name in SERVICES:
        check = services[name].get("healthcheck") or {}
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        if check:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck test {check['test']!r}"
    for name, probe in HEALTH_PROBES.items():
        assert probe in " ".join(services[name]["healthcheck"]["test"]), f"{name}: healthcheck should probe {probe}"
    for name in ONE_SHOT:
        assert services[name].get("restart") == "no", f"{name} runs once: restart must be 'no'"
        assert not services[name].get("ports"), f"{name} runs once: it publishes no port"
    for name in set(SERVICES) - ONE_SHOT:
        assert services[name].get("restart") in ("always", "unless-stopped"), f"{name}: no restart policy"


def test_start_order_conditions():
    services = _services()
    for dependency, dependent, condition in START_ORDER:
        deps = _depends_on(services[dependent])
        assert dependency in deps, f"{dependent} must depend on {dependency}"
        assert deps[dependency] == condition, f"{dependent} -> {dependency}: {deps[dependency]}, want {condition}"
    for name, service in services.items():
        for dependency, condition in _depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition in CONDITIONS, f"{name} -> {dependency}: unknown condition {condition}"
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} waits for {dependency}'s missing healthcheck"
            if condition == "service_completed_successfully":
                assert dependency in ONE_SHOT, f"{name} waits for long-running {dependency} to complete"


def test_dependency_graph_has_no_cycle_and_sorts_in_order():
    graph = {name: set(_depends_on(service)) for name, service in _services().items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"depends_on cycle: {exc.args[1]}")
    position = {name: i for i, name in enumerate(order)}
    for before, after in [
        ("postgres", "airflow-init"),
        ("redis", "airflow-init"),
        *(("airflow-init", s) for s in AIRFLOW),
        ("mlflow", "scoring"),
        ("scoring", "prometheus"),
        ("prometheus", "grafana"),
    ]:
        assert position[before] < position[after], f"{before} must start before {after}: {order}"


# -- the fraudflow image's services and the settings contract ---------------------------------


def test_fraudflow_services_share_image_environment_and_home():
    compose = _compose()
    assert "x-fraudflow" in compose, "the shared image/env/volumes live in the x-fraudflow anchor"
    assert re.findall(r"<<: \*fraudflow$", COMPOSE_FILE.read_text(), re.MULTILINE) == ["<<: *fraudflow"] * len(
        FRAUDFLOW_IMAGE
    )
    common = compose["x-fraudflow"]
    for name in FRAUDFLOW_IMAGE:
        service = compose["services"][name]
        assert service["image"] == common["image"] and service.get("build"), f"{name}: not the fraudflow image"
        assert f"fraudflow-home:{FRAUDFLOW_HOME}" in service["volumes"], f"{name}: no shared fraudflow home"
        env = _environment(service)
        for key, value in CONTRACT_ENV.items():
            assert key in env, f"{name}: {key} not set"
            if value is not None:
                assert env[key] == value, f"{name}: {key}={env[key]!r}, want {value!r}"
        password = "${POSTGRES_PASSWORD"
        assert env["FRAUDFLOW_POSTGRES_URL"].startswith(f"postgresql://fraudflow:{password}")
        assert env["FRAUDFLOW_POSTGRES_URL"].endswith("@postgres:5432"), "no database name: fraudflow appends it"
        assert env["FRAUDFLOW_AIRFLOW_JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET")
    assert "fraudflow-home" in compose["volumes"]


def test_fraudflow_commands():
    services = _services()
    assert _command(services["airflow-init"]) == ["fraudflow", "airflow", "db", "migrate"]
    assert _command(services["airflow-api-server"]) == ["fraudflow", "airflow", "api-server", "--port", "8080"]
    assert _command(services["airflow-scheduler"]) == ["fraudflow", "airflow", "scheduler"]
    assert _command(services["airflow-dag-processor"]) == ["fraudflow", "airflow", "dag-processor"]
    assert _command(services["airflow-triggerer"]) == ["fraudflow", "airflow", "triggerer"]
    assert _command(services["airflow-worker"]) == ["fraudflow", "airflow", "celery", "worker"]
    assert _command(services["scoring"]) == ["fraudflow", "serve", "--host", "0.0.0.0", "--port", "3000"]
    mlflow = _command(services["mlflow"])
    assert mlflow[:2] == ["mlflow", "server"]
    options = {
        arg: mlflow[i + 1] if i + 1 < len(mlflow) and not mlflow[i + 1].startswith("--") else ""
        for i, arg in enumerate(mlflow)
        if arg.startswith("--")
    }
    # The database password stays off the command line (process list): the URI comes from the
    # environment; the server runs MLflow's basic-auth app, bootstrapping the admin from .env.
    assert "--backend-store-uri" not in options and not any("PASSWORD" in arg for arg in mlflow)
    env = _environment(services["mlflow"])
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert options["--app-name"] == "basic-auth"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == env["MLFLOW_TRACKING_USERNAME"] == "fraudflow"
    assert (
        env["MLFLOW_AUTH_ADMIN_PASSWORD"]
        == env["MLFLOW_TRACKING_PASSWORD"]
        == "${MLFLOW_ADMIN_PASSWORD:?set MLFLOW_ADMIN_PASSWORD in .env}"
    )
    mounted = dict(_repo_mounts(services["mlflow"]))
    assert mounted["./deploy/mlflow/basic_auth.ini"] == env["MLFLOW_AUTH_CONFIG_PATH"]
    assert options["--artifacts-destination"] == f"{FRAUDFLOW_HOME}/mlflow/artifacts"
    assert "--serve-artifacts" in options and options["--host"] == "0.0.0.0" and options["--port"] == "5000"
    # MLflow 3's Host-header allow-list: the other containers call it as mlflow:5000.
    allowed = options["--allowed-hosts"].split(",")
    assert {"mlflow:5000", "localhost:*"} <= set(allowed) and "*" not in allowed


def test_fraudflow_env_names_are_settings_fields():
    fields = {"FRAUDFLOW_" + name.upper() for name in Settings.model_fields}
    used = set()
    for path in (COMPOSE_FILE, ENV_EXAMPLE):
        used |= set(re.findall(r"\bFRAUDFLOW_[A-Z0-9_]*[A-Z0-9]", path.read_text()))
    assert set(CONTRACT_ENV) <= used
    unknown = sorted(used - fields)
    missing_fields = [name.removeprefix("FRAUDFLOW_").lower() for name in unknown]
    assert not unknown, f"{unknown} are not fraudflow.settings.Settings fields (add: {missing_fields})"


def test_compose_environment_loads_as_production_settings(monkeypatch):
    """The contract environment is a valid production Settings whose databases are the ones the
    compose file's MLflow and PostgreSQL use, once .env holds real secrets; with .env.example's
    placeholders (``cp .env.example .env``) it refuses to start, naming each placeholder."""
    services, example = _services(), _env_example()
    for key in [k for k in os.environ if k.startswith("FRAUDFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in _environment(services["scoring"]).items():
        monkeypatch.setenv(key, _interpolate(value, example))
    with pytest.raises(ValueError, match="refuses placeholder secrets") as refused:
        Settings()
    for name in ("FRAUDFLOW_API_TOKEN", "FRAUDFLOW_AIRFLOW_JWT_SECRET", "the password in FRAUDFLOW_POSTGRES_URL"):
        assert name in str(refused.value)
    real = {k: v.replace("change-me", "s3cr3t") for k, v in example.items()}
    for key, value in _environment(services["scoring"]).items():
        monkeypatch.setenv(key, _interpolate(value, real))
    settings = Settings()
    assert settings.profile == "production" and str(settings.root) == FRAUDFLOW_HOME
    mlflow_env = {k: _interpolate(v, real) for k, v in _environment(services["mlflow"]).items()}
    mlflow = [_interpolate(c, real) for c in _command(services["mlflow"])]
    assert settings.postgres_database("mlflow") == mlflow_env["MLFLOW_BACKEND_STORE_URI"]
    assert str(settings.mlflow_artifacts_dir) == mlflow[mlflow.index("--artifacts-destination") + 1]
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.serving_autostart is False


def test_env_example_defines_every_variable_with_placeholders():
    example, text = _env_example(), COMPOSE_FILE.read_text()
    variables = {m.group(1) for m in _INTERPOLATION.finditer(text)}
    assert variables - set(example) == set(), "variables the compose file reads but .env.example lacks"
    required = {m.group(1) for m in _INTERPOLATION.finditer(text) if m.group(2) == ":?"}
    secrets = {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "GRAFANA_ADMIN_PASSWORD", "FRAUDFLOW_API_TOKEN"}
    assert required == secrets | {"MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY"}
    for name in required:
        assert example[name].startswith("change-me"), f".env.example: {name} must be a placeholder"
    assert _interpolate(text, example)  # every required variable has a value


# -- ports, mounts, image -----------------------------------------------------------------------


def test_published_ports_are_unique():
    published = {}
    for name, service in _services().items():
        for port in service.get("ports") or []:
            match = re.fullmatch(r"(?:.*:)?(\d+):(\d+)(?:/(?:tcp|udp))?", str(port))
            assert match, f"{name}: publish host:container explicitly, not {port!r}"
            host = int(match.group(1))
            assert host not in published, f"host port {host}: {published.get(host)} and {name}"
            published[host] = name
    assert {name: port for port, name in published.items()} == PUBLISHED


def test_every_mounted_repo_file_exists():
    mounts = [(name, source) for name, s in _services().items() for source, _ in _repo_mounts(s)]
    assert mounts
    for name, source in mounts:
        assert source.startswith("./"), f"{name}: mount {source} by a path relative to the repo"
        assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
    named = {v.split(":")[0] for s in _services().values() for v in s.get("volumes") or [] if isinstance(v, str)}
    named = {v for v in named if not v.startswith((".", "/"))}
    assert named <= set(_compose()["volumes"]), "named volumes must be declared at the top level"


def test_postgres_creates_the_three_databases():
    mounts = dict(_repo_mounts(_services()["postgres"]))
    sql = [s for s, target in mounts.items() if target.startswith("/docker-entrypoint-initdb.d/")]
    assert sql == ["./deploy/postgres/init.sql"]
    created = re.findall(r"CREATE DATABASE (\w+)", (REPO / sql[0]).read_text(), re.IGNORECASE)
    assert sorted(created) == ["airflow", "feast", "mlflow"]


def test_dockerfile_installs_the_pinned_environment():
    dockerfile = (REPO / "Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert instructions[0].startswith("FROM python:3.11-slim")
    assert re.search(r"pip install [^\n]*-c constraints\.txt [^\n]*-e '\.\[production\]'", dockerfile)
    assert "WORKDIR /opt/fraudflow" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    ignored = (REPO / ".dockerignore").read_text().split()
    for pattern in (".venv/", ".fraudflow/", ".git/", ".env", "**/__pycache__/", ".pytest_cache/"):
        assert pattern in ignored, f".dockerignore must exclude {pattern}"


# -- monitoring ---------------------------------------------------------------------------------


def test_prometheus_scrapes_the_scoring_service():
    services = _services()
    mounts = dict(_repo_mounts(services["prometheus"]))
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in _command(services["prometheus"])
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scoring = [
        job
        for job in config["scrape_configs"]
        if any("scoring:3000" in sc.get("targets", []) for sc in job.get("static_configs", []))
    ]
    assert len(scoring) == 1, "one scrape job for scoring:3000"
    assert scoring[0].get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisions_the_datasource_and_dashboard():
    mounts = dict(_repo_mounts(_services()["grafana"]))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_dir = mounts["./deploy/grafana/dashboards"]
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = [
        ds
        for f in sorted((provisioning / "datasources").glob("*.yml"))
        for ds in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert [(ds["type"], ds["url"]) for ds in datasources] == [("prometheus", "http://prometheus:9090")]
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.yml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == [dashboards_dir]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "fraudflow.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {datasources[0]["uid"]}


def test_grafana_dashboard_queries_every_metric_family():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "fraudflow.json").read_text())
    exprs = _dashboard_exprs(dashboard["panels"])
    scoring_http = (REPO / "services" / "fraud_scoring" / "scoring_http.py").read_text()
    for family in METRIC_FAMILIES:
        assert f'"{family}"' in scoring_http, f"{family} is no longer a metric of the scoring service"
        assert any(family in e for e in exprs), f"no dashboard panel queries {family}"
    flat = [re.sub(r"\s+", "", e) for e in exprs]
    for q in ("0.5", "0.99"):
        assert any(
            e.startswith(f"histogram_quantile({q},") and "rate(fraudflow_request_duration_seconds_bucket[" in e
            for e in flat
        ), f"latency p{q} panel"
    assert "sumby(served_by)(rate(fraudflow_requests_total[$__rate_interval]))" in flat
    assert any("fraudflow_fraud_score_bucket" in e for e in flat), "score distribution from the buckets"
    assert any("by(reason)" in e and "fraudflow_degraded_total" in e for e in flat)
    assert any("by(status)" in e and "fraudflow_errors_total" in e for e in flat)


# -- external checks ----------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema():
    """The compose-spec JSON schema (tests/data/compose_spec.json, from docker-compose 1.29.2,
    Apache-2.0) validates every key and type. Its 2021 revision predates the top-level
    ``name`` key (added to the spec later), so that one key is checked apart."""
    import jsonschema

    schema = json.loads((REPO / "tests" / "data" / "compose_spec.json").read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert compose.pop("name") == "fraudflow"
    errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    assert errors == []


def test_readme_lists_every_service():
    readme = (REPO / "README.md").read_text()
    missing = [name for name in SERVICES if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", readme)]
    assert not missing, f"README.md does not mention these docker-compose services: {missing}"
