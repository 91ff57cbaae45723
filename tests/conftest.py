"""Test harness: a real Airflow on SQLite in a temp AIRFLOW_HOME, one fraudflow home per test.

Airflow reads its configuration at import, so the environment is set here, before any test
module imports it; the metadata DB is migrated once per session (about 3 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="fraudflow-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "FRAUDFLOW_LANDING_TIMEOUT_SECONDS": "2",
        "FRAUDFLOW_LANDING_POKE_SECONDS": "1",
        "FRAUDFLOW_LANDING_SETTLE_SECONDS": "0",  # tests write a file and ingest it at once (settling: test_foundation)
        "FRAUDFLOW_TASK_RETRY_DELAY_SECONDS": "1",
        # Prequential selection multiplies training time by its trials x folds; the tests that are
        # about selection (test_train_model_dag, test_ensemble) turn it on, the rest train defaults.
        "FRAUDFLOW_SELECTION_TRIALS": "0",
        "GX_ANALYTICS_ENABLED": "False",
    }
)
os.environ.pop("FRAUDFLOW_HOME", None)


def _module_scope(nodeid: str) -> str:
    module = Path(nodeid.split("::", 1)[0]).name
    return "closed_loop" if module.startswith("test_closed_loop") else module


_MODULE_SECONDS: dict[str, float] = {}
_WORKER_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Time per module and per xdist worker (setup + call + teardown), for the summary."""
    scope = _module_scope(report.nodeid)
    _MODULE_SECONDS[scope] = _MODULE_SECONDS.get(scope, 0.0) + report.duration
    worker = getattr(getattr(report, "node", None), "gateway", None)
    worker_id = getattr(worker, "id", "main")
    _WORKER_SECONDS[worker_id] = _WORKER_SECONDS.get(worker_id, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """The slowest modules and each worker's busy time: where the suite's minutes go."""
    if not _MODULE_SECONDS:
        return
    slowest = sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1])[:12]
    terminalreporter.section("time per module (setup + tests + teardown)")
    for scope, seconds in slowest:
        terminalreporter.write_line(f"{seconds:8.1f} s  {scope}")
    busy = ", ".join(f"{w} {s / 60:.1f} min" for w, s in sorted(_WORKER_SECONDS.items()))
    terminalreporter.write_line(f"busy per worker: {busy}")


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs on two xdist workers: each test module stays whole on one worker (its
    module fixtures are built once), and the ``test_closed_loop*.py`` modules share one worker,
    in file order, so the session's closed loop runs once and its own checks read it before the
    UI tests change it.

    A scheduler, not ``--dist loadgroup``: pytest-xdist 3.8.0 marks a group by rewriting
    ``item._nodeid``, which pytest 9.2 no longer reads (nodeid comes from ``item._id``), so
    every ``xdist_group`` is silently ignored (tests/test_foundation.py shows it)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _module_scope(nodeid)

    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite) shared by the session's DAG tests."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    return _AIRFLOW_HOME


@pytest.fixture()
def settings(tmp_path, monkeypatch):
    """Settings whose home is this test's own temp folder."""
    from fraudflow.settings import get_settings

    monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / "home"))
    return get_settings()


@pytest.fixture(scope="session")
def small_history():
    """Ten days of a small simulated world: enough fraud of every scenario to test rules."""
    from fraudflow.demo.simulate import SimulationConfig, simulate_transactions

    return simulate_transactions(SimulationConfig(days=10, customers=300, terminals=600, seed=7))


@pytest.fixture(scope="session")
def serving_home(tmp_path_factory):
    """A home a scoring service can start on (``tests.helpers.build_serving_home``), shared by
    the serving and real-time feature tests: ``(settings, lake rows)``. Built once (~35 s);
    tests that change it only add transactions after its last lake day."""
    from tests.helpers import build_serving_home

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("serving") / "home"))
        from fraudflow.settings import get_settings

        settings = get_settings()
        frame = build_serving_home(settings)
    return settings, frame  # FRAUDFLOW_HOME is not left set: users pass settings explicitly


@pytest.fixture(scope="session")
def closed_loop(airflow_db, tmp_path_factory):
    """``make demo``'s closed loop at small scale (``tests.helpers.CLOSED_LOOP``), run once per
    session (~4.5 min) for the loop's own tests and the Airflow UI tests, which read its home:
    ``(settings, report, console text)``. Modules using it are named ``test_closed_loop*.py``
    so one worker runs them all (``pytest_xdist_make_scheduler``)."""
    from rich.console import Console

    from fraudflow.demo.closed_loop import run_demo
    from fraudflow.settings import get_settings
    from tests.helpers import CLOSED_LOOP

    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("loop")
        mp.setenv("FRAUDFLOW_HOME", str(root / "home"))
        mp.setenv("FRAUDFLOW_AIRFLOW_HOME_DIR", str(airflow_db))  # the session's migrated Airflow DB
        # A 1,000-card world lands near AP 0.5: the floors are config, lowered so the test is
        # about the loop's mechanics (full-size quality: benchmarks/model_quality.py).
        mp.setenv("FRAUDFLOW_GATE_MIN_AVERAGE_PRECISION", "0.3")
        mp.setenv("FRAUDFLOW_GATE_MIN_AUC_ROC", "0.7")
        settings = get_settings()
        with (root / "demo.txt").open("w") as fh:
            report = run_demo(settings, CLOSED_LOOP, Console(file=fh, width=160))
    return settings, report, (root / "demo.txt").read_text()
