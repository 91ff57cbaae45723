"""Schema normalisation, settings, landing lookup, and the repo's own files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fraudflow.ingestion.landing import BatchParseError, LandingError, find_landing_file, read_batch
from fraudflow.schema import RAW_COLUMNS, SchemaError, normalise_transactions
from fraudflow.settings import Profile, Settings

REPO = Path(__file__).resolve().parents[1]


def _row(**overrides):
    row = {
        "TRANSACTION_ID": 1,
        "TX_DATETIME": "2018-04-01 10:00:00",
        "CUSTOMER_ID": 12,
        "TERMINAL_ID": 34,
        "TX_AMOUNT": 10.5,
        "TX_TIME_SECONDS": 36000,
        "TX_TIME_DAYS": 0,
        "TX_FRAUD": 0,
        "TX_FRAUD_SCENARIO": 0,
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize("customer", [12, "12", "card-12", 12.0])
def test_ids_normalise_to_strings(customer):
    out = normalise_transactions(pd.DataFrame([_row(CUSTOMER_ID=customer)]))
    assert out["CUSTOMER_ID"].iloc[0] == str(customer).removesuffix(".0")
    assert tuple(out.columns) == RAW_COLUMNS


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame([_row()]).drop(columns="TX_AMOUNT"), "missing columns ['TX_AMOUNT']"),
        (pd.DataFrame([_row(EXTRA=1)]), "unexpected columns ['EXTRA']"),
        (pd.DataFrame([_row(TX_AMOUNT="12,50")]), "TX_AMOUNT"),
        (pd.DataFrame([_row(TX_DATETIME="not a date")]), "not a date"),
    ],
)
def test_schema_errors_name_the_column(frame, message):
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        normalise_transactions(frame)


def test_everything_lives_under_one_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / "h"))
    s = Settings()
    assert s.profile is Profile.local
    paths = [
        s.landing_dir,
        s.lake_dir,
        s.quarantine_dir,
        s.airflow_home,
        s.feast_dir,
        s.bentoml_home,
        s.reports_dir,
        s.mlflow_artifacts_dir,
        s.lineage_log,
        s.staging_dir,
        s.gx_dir,
    ]
    assert all(p.is_relative_to(tmp_path / "h") for p in paths)
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow' / 'mlflow.db'}"
    assert not (tmp_path / "h").exists(), "reading settings must not create folders"


def test_default_home_is_inside_the_repo(monkeypatch):
    monkeypatch.delenv("FRAUDFLOW_HOME", raising=False)
    assert Settings().root == REPO / ".fraudflow"


def test_landing_lookup(settings):
    day = dt.date(2018, 4, 1)
    assert find_landing_file(settings, day) is None
    folder = settings.landing_dir / f"date={day}"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("ignored")
    (folder / ".partial.csv").write_text("ignored: hidden, still being written")
    assert find_landing_file(settings, day) is None
    (folder / "a.csv").write_text("x")
    assert find_landing_file(settings, day) == folder / "a.csv"
    (folder / "b.parquet").write_text("x")
    with pytest.raises(LandingError, match="2 landing files"):
        find_landing_file(settings, day)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [("empty.csv", b"", "empty"), ("bad.parquet", b"PAR1 not really", "cannot parse")],
)
def test_unparseable_files_raise_a_parse_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BatchParseError, match=message):
        read_batch(path)


def test_compose_file_parses():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]


def test_ci_calls_the_readme_test_command():
    assert "make test" in (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_pytest_xdist_ignores_xdist_group_under_pytest_9(tmp_path):
    """Library bug (pytest-xdist 3.8.0 + pytest 9.2.0): ``--dist loadgroup`` rewrites
    ``item._nodeid``, which pytest 9 no longer reads, so a group's tests still spread over
    workers. tests/conftest.py schedules by module instead; when this test fails, the bug is
    fixed and that workaround can go."""
    import re
    import subprocess
    import sys

    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_grouped.py").write_text(
        "import pytest\npytestmark = pytest.mark.xdist_group('g')\n"
        + "".join(f"def test_{i}():\n    pass\n" for i in range(6))
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "-v"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    workers = set(re.findall(r"\[(gw\d)\]", done.stdout))
    assert workers == {"gw0", "gw1"}, done.stdout[-2000:]  # one group, yet both workers ran it


def test_a_bad_date_on_the_command_line_is_a_usage_error_not_a_traceback():
    from click.testing import CliRunner

    from fraudflow.cli import main

    done = CliRunner().invoke(main, ["ingest", "--start", "2018-13-01", "--end", "2018-04-02"])
    assert done.exit_code == 2 and done.exception is None or isinstance(done.exception, SystemExit)
    assert "Invalid value for '--start'" in done.output and "'2018-13-01' is not a date (YYYY-MM-DD)" in done.output
    assert "Traceback" not in done.output


def test_a_stale_service_pid_of_another_process_is_left_alone(tmp_path, monkeypatch):
    """``fraudflow down`` stops a recorded scoring service only if that pid is still one."""
    import subprocess

    from fraudflow.deployment.service_process import stop_recorded_service
    from fraudflow.settings import get_settings

    monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / "home"))
    settings = get_settings()
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)  # took the recorded pid
    try:
        settings.serving_dir.mkdir(parents=True)
        (settings.serving_dir / "service.pid").write_text(str(bystander.pid))
        assert stop_recorded_service(settings) is False
        assert bystander.poll() is None  # still running
        assert not (settings.serving_dir / "service.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_landing_file_still_being_copied_is_not_taken(tmp_path, monkeypatch, small_history):
    """A CSV copied in place (no dot-file and rename) cut at a line boundary would pass the
    row-count band: the sensor waits until the file is unchanged for the settle period, or takes
    it at once when the sender writes ``<name>.done``."""
    import os
    import time

    from fraudflow.demo.simulate import write_landing_files
    from fraudflow.orchestration.sensors import LandingFileSensor

    monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRAUDFLOW_LANDING_SETTLE_SECONDS", "30")
    from fraudflow.settings import get_settings

    day = small_history["TX_DATETIME"].dt.date.min()
    (written,) = write_landing_files(small_history, get_settings().landing_dir, days=(day, day), fmt="csv")
    text = written.read_text()
    written.write_text(text[: text.index("\n", len(text) // 2) + 1])  # half copied so far
    sensor = LandingFileSensor(task_id="wait_for_landing_file", day=day.isoformat())
    assert sensor.poke({}) is False
    old = time.time() - 31
    os.utime(written, (old, old))  # 31 s without a change: settled
    assert sensor.poke({}).xcom_value == str(written)
    os.utime(written)  # changed again just now
    assert sensor.poke({}) is False
    written.with_name(written.name + ".done").touch()  # the sender says it is complete
    assert sensor.poke({}).is_done


def test_a_first_model_waits_until_its_training_week_has_whole_windows():
    """FRAUDFLOW_FIRST_MODEL_MIN_DAYS is the windows' reach (37 days) plus the split (21): on
    that many lake days the first training week's features see their whole history."""
    from fraudflow.features.compute import LOOKBACK_DAYS
    from fraudflow.settings import Settings
    from fraudflow.training.training_set import training_window

    settings = Settings()
    last = dt.date(2026, 11, 29)
    first = last - dt.timedelta(days=settings.first_model_min_days - 1)
    window = training_window(last, train_days=settings.train_days, test_days=settings.test_days)
    assert window.train_start - dt.timedelta(days=LOOKBACK_DAYS) == first
