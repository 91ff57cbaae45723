"""Re-admitting a fixed file: quarantine -> `fraudflow quarantine list/release` -> fix -> ingest."""

from __future__ import annotations

import datetime as dt
import hashlib

import pandas as pd
import pytest
from click.testing import CliRunner

from fraudflow.cli import main
from fraudflow.demo.simulate import write_landing_files
from fraudflow.lake import list_partitions
from fraudflow.lineage import read_lineage
from fraudflow.orchestration.runtime import as_logical_date, load_dag, run_dag

pytestmark = pytest.mark.e2e
DAY = dt.date(2018, 4, 2)


def test_release_round_trip(airflow_db, settings, small_history, monkeypatch):
    from fraudflow import cli

    monkeypatch.setattr(cli.console, "width", 250)  # its width was fixed at import (80 off a terminal)
    (landing,) = write_landing_files(small_history, settings.landing_dir, days=(DAY, DAY))
    good = pd.read_parquet(landing)
    good.assign(SOURCE_SYSTEM="pos-v2").to_parquet(landing, index=False)  # an unexpected column
    bad_sha = hashlib.sha256(landing.read_bytes()).hexdigest()
    dag = load_dag("ingest_transactions")

    assert run_dag(dag, logical_date=as_logical_date(DAY)).state == "failed"
    runner = CliRunner()
    listed = runner.invoke(main, ["quarantine", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert str(DAY) in listed.output and "expect_table_columns_to_match_set" in listed.output

    # Releasing while landing already holds a file for the day is refused (no guessing).
    landing.parent.mkdir(parents=True, exist_ok=True)
    (landing.parent / "other.csv").write_text("x")
    refused = runner.invoke(main, ["quarantine", "release", str(DAY)])
    assert refused.exit_code != 0 and "landing already has" in refused.output
    (landing.parent / "other.csv").unlink()

    released = runner.invoke(main, ["quarantine", "release", str(DAY)])
    assert released.exit_code == 0, released.output
    assert hashlib.sha256(landing.read_bytes()).hexdigest() == bad_sha  # same bytes come back
    assert runner.invoke(main, ["quarantine", "list"]).output.strip() == "quarantine is empty"
    assert (settings.quarantine_dir / "_released").is_dir()  # the report is kept

    good.to_parquet(landing, index=False)  # the fix
    assert run_dag(dag, logical_date=as_logical_date(DAY)).state == "success"
    assert list_partitions(settings) == [DAY]
    stages = [e["stage"] for e in read_lineage(settings)]
    assert stages == ["quarantine", "quarantine_release", "publish_partition"]

    missing = runner.invoke(main, ["quarantine", "release", "2018-05-01"])
    assert missing.exit_code != 0 and "nothing quarantined" in missing.output


def test_a_torn_quarantine_report_does_not_break_the_listing(airflow_db, settings, small_history, caplog):
    """Two quarantined days, one report cut mid-write: the other is still listed, the torn one
    named in a warning, and its file is still in quarantine."""
    from fraudflow.ingestion.quarantine import REASON_FILE, list_quarantined, quarantine_folder

    days = (DAY, DAY + dt.timedelta(days=1))
    dag = load_dag("ingest_transactions")
    for day in days:
        (landing,) = write_landing_files(small_history, settings.landing_dir, days=(day, day))
        pd.read_parquet(landing).assign(SOURCE_SYSTEM="pos-v2").to_parquet(landing, index=False)
        assert run_dag(dag, logical_date=as_logical_date(day)).state == "failed"
    torn = quarantine_folder(settings, days[0]) / REASON_FILE
    torn.write_text(torn.read_text()[:40])
    import logging

    logger = logging.getLogger("fraudflow.ingestion.quarantine")
    logger.addHandler(caplog.handler)  # Airflow's dag.test() reconfigured logging: listen directly
    try:
        assert [r.day for r in list_quarantined(settings)] == [days[1]]
    finally:
        logger.removeHandler(caplog.handler)
    assert f"{torn} is unreadable" in caplog.text
    assert (torn.parent / landing.name).exists()
