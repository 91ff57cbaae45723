"""fraudflow under the real Airflow scheduler (api-server, scheduler, dag-processor, LocalExecutor,
SQLite), on a world dated up to yesterday: what ``dag.test()`` cannot show.

The scheduler, not the test, creates the daily ingest runs from the data-interval timetable
(catchup over the days that can have files), the Asset events start ``build_features`` and
``monitor_drift``, and ``monitor_drift``'s trigger starts ``train_model``. The newest day's
file lands late: its sensor waits, the day's DeadlineAlert fires (webhook), then the file
lands and the day is published. A short training deadline fires while ``train_model`` runs.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest

from fraudflow.demo.simulate import DriftSpec, SimulationConfig, simulate_transactions, write_landing_files
from fraudflow.schema import normalise_transactions
from tests.helpers import publish_history
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.e2e

CHAIN = ["ingest_transactions", "build_features", "monitor_drift", "train_model"]


def _db(settings) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{settings.airflow_home / 'airflow.db'}?mode=ro", uri=True, timeout=30)


def _runs(settings, dag_id: str) -> list[tuple[str, str, str | None, str]]:
    """(run_id, state, logical_date, run_type) of a DAG's runs, oldest first."""
    with _db(settings) as db:
        return db.execute(
            "SELECT run_id, state, logical_date, run_type FROM dag_run WHERE dag_id = ? ORDER BY id", (dag_id,)
        ).fetchall()


def _task_states(settings, dag_id: str, run_id: str) -> dict[str, str]:
    with _db(settings) as db:
        rows = db.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
        ).fetchall()
    return dict(rows)


def _wait(what: str, probe, timeout: float, live_logs: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2)
    tail = (live_logs / "scheduler.log").read_text(errors="replace")[-3000:]
    raise TimeoutError(f"{what} not seen in {timeout:.0f} s; scheduler log tail:\n{tail}")


@pytest.fixture(scope="module")
def live_world(tmp_path_factory):
    """A home whose lake holds 30 days up to three days ago and a champion trained on them,
    with drift in the last 9 days; the scheduler is left to ingest the last two days."""
    today = dt.datetime.now(dt.UTC).date()
    first = today - dt.timedelta(days=32)
    catchup_from = today - dt.timedelta(days=2)
    late_day = today - dt.timedelta(days=1)
    root = tmp_path_factory.mktemp("live")
    with pytest.MonkeyPatch.context() as mp, WebhookReceiver() as receiver:
        midnight = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC)
        env = {
            "FRAUDFLOW_HOME": str(root / "home"),
            "FRAUDFLOW_START_DATE": catchup_from.isoformat(),
            "FRAUDFLOW_TIME_ORIGIN": first.isoformat(),  # the world's TX_TIME_DAYS count from its first day
            "FRAUDFLOW_INGEST_CATCHUP": "true",
            "FRAUDFLOW_LANDING_POKE_SECONDS": "2",
            "FRAUDFLOW_LANDING_TIMEOUT_SECONDS": "900",
            "FRAUDFLOW_TRAINING_DEADLINE_SECONDS": "5",
            "FRAUDFLOW_ALERT_WEBHOOK_URL": receiver.url,
            "FRAUDFLOW_GATE_MIN_AVERAGE_PRECISION": "0.2",  # a 600-card world: the subject is the scheduler
            "FRAUDFLOW_GATE_MIN_AUC_ROC": "0.6",
            "FRAUDFLOW_GATE_AP_TOLERANCE": "1.0",
            # The triggered train_model searches two trials per family in spawned worker
            # processes, as make up does: an Airflow task's __main__ is the airflow CLI.
            "FRAUDFLOW_SELECTION_TRIALS": "2",
            "FRAUDFLOW_SELECTION_FOLDS": "2",
        }
        for key, value in env.items():
            mp.setenv(key, value)
        from fraudflow import registry
        from fraudflow.features.compute import build_features
        from fraudflow.features.store import apply_feature_repo, materialize_online
        from fraudflow.settings import get_settings
        from fraudflow.training.judge import judge_candidates
        from fraudflow.training.register import register_best
        from fraudflow.training.train import train_candidate
        from fraudflow.training.training_set import build_training_set

        settings = get_settings()
        world = SimulationConfig(
            start=first,
            days=(late_day - first).days + 1,
            customers=600,
            terminals=1200,
            seed=5,
            drift=DriftSpec(start=today - dt.timedelta(days=9), amount_scale=1.5, night_share=0.3),
        )
        frame = simulate_transactions(world)
        history = frame[frame["TX_DATETIME"].dt.date < catchup_from]
        publish_history(settings, normalise_transactions(history))
        build_features(settings)
        apply_feature_repo(settings)
        materialize_online(settings, end=dt.datetime.combine(catchup_from, dt.time(), tzinfo=dt.UTC))
        run_date = today - dt.timedelta(days=10)
        training_set = build_training_set(settings, run_date=run_date, run_id="live-test", reason="first model")
        run = train_candidate(settings, candidate="xgboost", training_set=training_set, params={"n_estimators": 40})
        # The first champion through the real gate and registration (its training-set snapshot
        # is monitor_drift's reference).
        decision = judge_candidates(settings, training_set=training_set, candidates=[run])
        register_best(settings, decision=decision, training_set=training_set, reason="first model")
        registry.promote_challenger(settings)
        # Files that can be complete: every day but the late one.
        write_landing_files(frame, settings.landing_dir, days=(catchup_from, catchup_from))
        # The late day's deadline passes ~150 s from now, once the scheduler (started next) has
        # created its run and its sensor waits. Counted from here, not from before the world was
        # built: on a slow machine that took longer than the margin, the run was created after
        # its deadline and drew the catch-up alert instead.
        since_midnight = int((dt.datetime.now(dt.UTC) - midnight).total_seconds())
        mp.setenv("FRAUDFLOW_INGEST_DEADLINE_SECONDS", str(since_midnight + 150))
        yield settings, frame, receiver, catchup_from, late_day


def test_the_scheduler_runs_the_chain_by_itself(live_world):
    from fraudflow.orchestration.live import start_airflow, stop_airflow, unpause

    settings, frame, receiver, catchup_from, late_day = live_world
    logs = settings.root / "logs" / "airflow-live"
    live = start_airflow(settings)
    try:
        unpause(settings, live, CHAIN)

        # The scheduler creates one run per ended day since the start date; the late day's
        # sensor waits for its file.
        def late_run_waiting():
            runs = {r[2][:10]: r for r in _runs(settings, "ingest_transactions") if r[2]}
            run = runs.get(late_day.isoformat())
            if run and _task_states(settings, "ingest_transactions", run[0]).get("wait_for_landing_file") in (
                "up_for_reschedule",
                "running",
            ):
                return run
            return None

        late_run = _wait("the late day's sensor waiting", late_run_waiting, 240, logs)
        assert late_run[3] == "scheduled"
        dated = sorted(r[2][:10] for r in _runs(settings, "ingest_transactions") if r[2])
        assert dated == [catchup_from.isoformat(), late_day.isoformat()]  # ended days only, none for today

        # Its deadline passes while it waits: the scheduler fires the DeadlineAlert.
        def deadline_alert():
            return [a for a in receiver.received if a["check"] == "ingest_deadline" and late_run[0] in a["summary"]]

        (alert,) = _wait("the ingest deadline alert", deadline_alert, 180, logs)
        assert alert["tier"] == "immediate" and "day not published by its deadline" in alert["summary"]
        # The catch-up day's run was queued after its deadline had passed: one daily
        # "catch-up" alert, not a page (make up catches up 40 days at once).
        (catchup_run,) = [
            r[0] for r in _runs(settings, "ingest_transactions") if (r[2] or "")[:10] == catchup_from.isoformat()
        ]
        catchup_alerts = [
            (a["check"], a["tier"])
            for a in receiver.received
            if catchup_run in a["summary"] and "deadline" in a["check"]
        ]
        assert catchup_alerts == [("ingest_deadline_catchup", "daily")]

        # The file lands late: the sensor's next poke finds it and the day is published.
        write_landing_files(frame, settings.landing_dir, days=(late_day, late_day))

        def every_ingest_succeeded():
            runs = [r for r in _runs(settings, "ingest_transactions") if r[2]]
            return len(runs) == 2 and all(r[1] == "success" for r in runs)

        _wait("both ingest runs succeeding", every_ingest_succeeded, 300, logs)
        from fraudflow.lake import list_partitions

        assert list_partitions(settings)[-1] == late_day

        # Asset events, not the test, started the rest of the chain.
        def chain_done():
            triggered = [r for r in _runs(settings, "train_model") if r[3] == "operator_triggered"]
            return triggered and triggered[0][1] in ("success", "failed")

        _wait("monitor_drift's triggered train_model finishing", chain_done, 900, logs)
        for dag_id in ("build_features", "monitor_drift"):
            runs = _runs(settings, dag_id)
            assert runs and all(r[3] == "asset_triggered" for r in runs), runs
            assert all(r[1] == "success" for r in runs), runs
        # Unpausing fires the last missed nightly tick: with 32 lake days (< 35) it skips quietly.
        by_type = {r[3]: r for r in _runs(settings, "train_model")}
        assert set(by_type) == {"scheduled", "operator_triggered"}  # nightly + monitor_drift's trigger
        nightly = _task_states(settings, "train_model", by_type["scheduled"][0])
        assert by_type["scheduled"][1] == "success" and nightly["build_training_set"] == "skipped", nightly
        triggered = by_type["operator_triggered"]
        assert triggered[1] == "success", _task_states(settings, "train_model", triggered[0])
        # Its search fitted trials in spawned workers (not the daemonic-process fallback).
        run_logs = settings.airflow_home / "logs" / "dag_id=train_model" / f"run_id={triggered[0]}"
        candidate_logs = list((run_logs / "task_id=train_candidate").glob("*/attempt=*.log"))
        assert len(candidate_logs) == 2
        assert not any("selection trials in process" in p.read_text() for p in candidate_logs)
        assert any(a["check"] == "training_deadline" and triggered[0] in a["summary"] for a in receiver.received)
    finally:
        stopped = stop_airflow(settings)
    assert set(stopped) == {"api-server", "scheduler", "dag-processor"}
    assert not (settings.root / "run" / "airflow.json").exists()
