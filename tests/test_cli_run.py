"""`fraudflow run` as a person sees it: one line per task, the reason a task failed, the run's
state and the log file; Airflow's own output goes to that file, not the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def _fraudflow_run(dag_id: str, home: Path, airflow_home: Path) -> subprocess.CompletedProcess:
    """``fraudflow run <dag_id>`` as a person types it: no logical date, default params."""
    env = {**os.environ, "FRAUDFLOW_HOME": str(home), "FRAUDFLOW_AIRFLOW_HOME_DIR": str(airflow_home)}
    command = [str(Path(sys.executable).with_name("fraudflow")), "run", dag_id]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_run_prints_one_line_per_task_and_the_reason_it_failed(airflow_db, tmp_path):
    home = tmp_path / "home"
    # No lake yet, no logical date (as the UI's Trigger button): train_model must fail clearly.
    done = _fraudflow_run("train_model", home, airflow_db)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    task_lines = [line for line in lines if re.match(r"^  \w+ +(success|failed|upstream_failed) ", line)]
    assert {line.split()[0] for line in task_lines} >= {"build_training_set", "train_candidate", "register_challenger"}
    assert any(line.split()[:2] == ["build_training_set", "failed"] for line in task_lines)
    assert "build_training_set: AirflowFailException: no published lake day" in done.stdout
    summary = lines[-1]
    log = home / "logs" / "fraudflow-run-train_model.log"
    assert summary.startswith("train_model failed in ") and summary.endswith(f"log: {log}")
    # Nothing else reaches the terminal: no Airflow log records, no library noise at exit.
    assert len(lines) == len(task_lines) + 2, done.stdout
    assert "[info" not in done.stdout + done.stderr and "nanobind" not in done.stderr
    assert "Task failed with exception" in log.read_text()


def test_deploy_model_triggered_with_nothing_registered_fails_clearly_once(airflow_db, tmp_path):
    """deploy_model from the Trigger button (no logical date, default params) on a home with no
    challenger: one clear reason, no retry of a failure that cannot heal."""
    home = tmp_path / "home"
    done = _fraudflow_run("deploy_model", home, airflow_db)
    assert done.returncode == 1, done.stdout + done.stderr
    reason = "no fraud-detector version has the alias 'challenger': nothing to deploy"
    assert f"open_rollout: AirflowFailException: {reason}" in done.stdout, done.stdout
    log = (home / "logs" / "fraudflow-run-deploy_model.log").read_text()
    assert "Marking task as UP_FOR_RETRY" not in log and "up_for_retry" not in log.lower()
