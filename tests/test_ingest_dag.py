"""ingest_transactions through real Airflow (dag.test on SQLite): exact rows, idempotent, safe."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from fraudflow.demo.simulate import write_landing_files
from fraudflow.lake import list_partitions, read_lake, read_partition_manifest
from fraudflow.lineage import read_lineage
from fraudflow.monitoring.alerts import read_alerts
from fraudflow.orchestration.runtime import as_logical_date, load_dag, run_dag
from tests.helpers import day_rows, tree_digest
from tests.webhook import WebhookReceiver

DAY1 = dt.date(2018, 4, 1)
DAYS = [DAY1 + dt.timedelta(days=i) for i in range(3)]

pytestmark = pytest.mark.e2e


@pytest.fixture()
def ingest_dag(airflow_db, settings):
    return load_dag("ingest_transactions")


def test_three_days_then_rerun_then_missing_day(ingest_dag, settings, small_history, capfd, monkeypatch):
    write_landing_files(small_history, settings.landing_dir, days=(DAYS[0], DAYS[-1]))

    for day in DAYS:
        outcome = run_dag(ingest_dag, logical_date=as_logical_date(day))
        assert outcome.state == "success", outcome

    expected = small_history[small_history["TX_DATETIME"].dt.date.isin(DAYS)]
    lake = read_lake(settings)
    assert list_partitions(settings) == DAYS
    assert len(lake) == len(expected)
    assert sorted(lake["TRANSACTION_ID"]) == sorted(expected["TRANSACTION_ID"])
    pd.testing.assert_series_equal(
        lake.sort_values("TRANSACTION_ID")["TX_AMOUNT"].reset_index(drop=True),
        expected.sort_values("TRANSACTION_ID")["TX_AMOUNT"].reset_index(drop=True),
    )

    # Lineage: each partition names its source, checksum, run and validation.
    manifest = read_partition_manifest(settings, DAYS[1])
    assert manifest.rows == len(day_rows(small_history, DAYS[1]))
    assert manifest.source_file.endswith(f"date={DAYS[1]}/transactions.parquet")
    assert manifest.run_id and manifest.validation_id and len(manifest.source_sha256) == 64
    assert len(read_lineage(settings, stage="publish_partition")) == 3

    # Re-running a date replaces its partition: same rows, no duplicates.
    first_run = manifest.run_id
    outcome = run_dag(ingest_dag, logical_date=as_logical_date(DAYS[1]))
    assert outcome.state == "success"
    assert len(read_lake(settings)) == len(expected)
    assert read_partition_manifest(settings, DAYS[1]).run_id != first_run

    # A date with no landing file fails (sensor timeout) naming the path; the lake is untouched;
    # the failure reaches a person (the notifier on every task: alerts log and webhook).
    before = tree_digest(settings.lake_dir)
    capfd.readouterr()
    missing = DAY1 + dt.timedelta(days=8)
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", receiver.url)
        outcome = run_dag(ingest_dag, logical_date=as_logical_date(missing))
    (alert,) = [a for a in read_alerts(settings) if a["check"].startswith("task_failed:")]
    assert alert["check"] == "task_failed:ingest_transactions.wait_for_landing_file"
    assert alert["tier"] == "immediate" and f"No landing file for {missing}" in alert["summary"]
    assert alert["webhook_status"] == "200" and len(receiver.received) == 1
    assert receiver.received[0]["check"] == alert["check"]
    assert outcome.state == "failed"
    assert outcome.failed_tasks == ["wait_for_landing_file"]
    log = capfd.readouterr()
    expected_folder = settings.landing_dir / f"date={missing}"
    assert f"No landing file for {missing}" in log.out + log.err
    assert str(expected_folder) in log.out + log.err
    assert tree_digest(settings.lake_dir) == before


def test_out_of_order_and_user_csv_with_string_ids(ingest_dag, settings, small_history):
    """Users drop their own CSV files; ids may be strings; dates may arrive in any order."""
    later, earlier = DAYS[2], DAYS[0]
    frame = day_rows(small_history, later).copy()
    frame["CUSTOMER_ID"] = "C" + frame["CUSTOMER_ID"].astype(str)
    folder = settings.landing_dir / f"date={later}"
    folder.mkdir(parents=True)
    frame.to_csv(folder / "bank_export.csv", index=False)
    write_landing_files(small_history, settings.landing_dir, days=(earlier, earlier))

    assert run_dag(ingest_dag, logical_date=as_logical_date(later)).state == "success"
    assert run_dag(ingest_dag, logical_date=as_logical_date(earlier)).state == "success"

    lake = read_lake(settings)
    assert list_partitions(settings) == [earlier, later]
    assert lake[lake["TX_DATETIME"].dt.date == later]["CUSTOMER_ID"].str.startswith("C").all()
    assert lake[lake["TX_DATETIME"].dt.date == earlier]["CUSTOMER_ID"].str.isdigit().all()
    assert str(lake["TX_DATETIME"].dtype) == "datetime64[us]"


def test_timezone_aware_times_are_judged_and_stored_in_utc(ingest_dag, settings, small_history):
    """A file written with aware timestamps (Brussels time, the same instants) is not quarantined
    as "not between" its day: it is read as the UTC wall time the lake stores."""
    day = DAYS[1]
    frame = day_rows(small_history, day).sort_values("TRANSACTION_ID").reset_index(drop=True)
    expected = frame["TX_DATETIME"].astype("datetime64[us]")
    aware = frame.assign(TX_DATETIME=frame["TX_DATETIME"].dt.tz_localize("UTC").dt.tz_convert("Europe/Brussels"))
    folder = settings.landing_dir / f"date={day}"
    folder.mkdir(parents=True)
    aware.to_parquet(folder / "aware.parquet", index=False)

    outcome = run_dag(ingest_dag, logical_date=as_logical_date(day))

    assert outcome.state == "success", outcome
    lake = read_lake(settings).sort_values("TRANSACTION_ID").reset_index(drop=True)
    assert (lake["TX_DATETIME"] == expected).all()


def test_a_run_without_a_logical_date_ingests_the_oldest_waiting_day(ingest_dag, settings, small_history, capfd):
    """Airflow 3's Trigger button and REST API may leave the logical date empty: the run takes the
    oldest landed day that is not published yet, and with none says how to name a day."""
    write_landing_files(small_history, settings.landing_dir, days=(DAYS[0], DAYS[1]))
    for expected in DAYS[:2]:
        outcome = run_dag(ingest_dag, logical_date=None)
        assert outcome.state == "success", outcome
        assert outcome.logical_date is None
        assert list_partitions(settings)[-1] == expected
    capfd.readouterr()
    outcome = run_dag(ingest_dag, logical_date=None)
    assert outcome.state == "failed" and outcome.failed_tasks == ["resolve_day"]
    log = capfd.readouterr()
    assert "nothing to ingest" in log.out + log.err and '{"day": "YYYY-MM-DD"}' in log.out + log.err


def test_airflow_bug_dag_test_with_a_deadline_alert_crashes_on_success(airflow_db, settings, small_history):
    """Airflow 3.3.2: ``dag.test()`` of a DAG with a ``DeadlineAlert`` crashes once the run
    succeeds: ``DagRun.update_state`` prunes deadlines with ``DeadlineAlert.get_by_id`` for each
    entry of ``dag.deadline``, which under ``dag.test()`` holds serialized dicts, not ids.
    ``run_dag`` drops the deadlines for that reason (only a scheduler checks them); the tests
    above show it then succeeds. When this test fails, Airflow fixed it: drop the workaround."""
    from sqlalchemy.exc import StatementError

    write_landing_files(small_history, settings.landing_dir, days=(DAY1, DAY1))
    dag = load_dag("ingest_transactions")
    assert dag.deadline  # the DAG file declares its deadline
    with pytest.raises(StatementError, match="'dict' object has no attribute 'hex'"):
        dag.test(logical_date=as_logical_date(DAY1))


def _break_amounts(settings, day: dt.date) -> Path:
    """Three negative amounts in the day's landing file: the gate's amount range rule fails."""
    from fraudflow.ingestion.landing import find_landing_file

    path = find_landing_file(settings, day)
    frame = pd.read_parquet(path)
    frame.loc[frame.index[:3], "TX_AMOUNT"] = -5.0
    frame.to_parquet(path, index=False)
    return path


def _review_runs_for(day: dt.date) -> int:
    """``review_quarantine`` runs asked for ``day`` (the session's Airflow DB is shared)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "review_quarantine").all()
        return sum((r.conf or {}).get("day") == day.isoformat() for r in runs)


def test_backfill_ingests_every_waiting_day_in_one_run_as_daily_runs_would(
    airflow_db, settings, small_history, tmp_path, monkeypatch, capfd
):
    """backfill_transactions, triggered with its defaults and no logical date: every landed day
    not yet published goes through the same GX gate in date order, in one run. A broken file is
    quarantined with its report, the other days are published and the run fails naming the file
    (the alert carries it) and, with reviews on, asks for a review of that day as a daily run
    would. The partitions and the verdicts are those of daily runs on the same files; the lake
    Asset is emitted once."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    from fraudflow.settings import get_settings

    days = sorted(small_history["TX_DATETIME"].dt.date.unique())
    broken = days[6]
    write_landing_files(small_history, settings.landing_dir)
    bad_file = _break_amounts(settings, broken)
    assert run_dag(load_dag("ingest_transactions"), logical_date=as_logical_date(days[0])).state == "success"

    # GX builds pages only for the newest FRAUDFLOW_DATA_DOCS_INDEX_RESULTS results: with 6, the
    # 8 passing results of this walk must be built a few days at a time, not all at the end.
    monkeypatch.setenv("FRAUDFLOW_DATA_DOCS_INDEX_RESULTS", "6")
    monkeypatch.setenv("FRAUDFLOW_REVIEW_QUARANTINE", "true")
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", receiver.url)
        outcome = run_dag(load_dag("backfill_transactions"), logical_date=None)
    assert outcome.state == "failed" and outcome.failed_tasks == ["report_quarantined"], outcome
    assert list_partitions(settings) == [d for d in days if d != broken]
    assert (settings.quarantine_dir / f"date={broken}" / "reason.json").exists() and not bad_file.exists()
    (alert,) = [a for a in read_alerts(settings) if a["check"].startswith("task_failed:")]
    assert alert["check"] == "task_failed:backfill_transactions.report_quarantined"
    assert "8 days published" in alert["summary"] and "1 quarantined" in alert["summary"]
    assert str(bad_file) in alert["summary"] and "TX_AMOUNT" in alert["summary"]
    assert len(receiver.received) == 1
    (event,) = read_lineage(settings, stage="backfill_transactions")
    assert event["wrote"]["published"] == [d.isoformat() for d in days[1:] if d != broken]
    # Every published day has its Data Docs pages (built once, after the walk) and is on the index.
    site = settings.gx_dir / "uncommitted" / "data_docs" / "local_site"
    pages = [str(p) for p in (site / "validations").rglob("*.html")]
    for day in event["wrote"]["published"]:
        assert sum(f"/{day}__" in p for p in pages) == 1, day  # one page per day (one suite)
    assert event["wrote"]["published"][-1] in (site / "index.html").read_text()
    with create_session() as session:
        emitted = session.query(AssetEvent).filter(AssetEvent.source_run_id == outcome.run_id).all()
        assert len(emitted) == 1 and emitted[0].extra["days"] == event["wrote"]["published"]
    # The quarantined file waits for a person, as after a daily run: one review_quarantine run.
    (request,) = [t for t in outcome.tasks if t.task_id.startswith("request_review")]
    assert request.task_id == "request_review[0]" and request.state == "success"
    assert _review_runs_for(broken) == 1

    # Nothing left to do: a second trigger fails at once and says so.
    capfd.readouterr()
    again = run_dag(load_dag("backfill_transactions"), logical_date=None)
    assert again.state == "failed" and again.failed_tasks == ["backfill_landed_days"]
    assert "nothing to backfill" in "".join(capfd.readouterr())
    assert _review_runs_for(broken) == 1

    # The same files through one daily ingest_transactions run per day, in a second home.
    backfilled = settings
    monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / "daily"))
    daily = get_settings()
    write_landing_files(small_history, daily.landing_dir)
    _break_amounts(daily, broken)
    ingest = load_dag("ingest_transactions")
    states = {day: run_dag(ingest, logical_date=as_logical_date(day)).state for day in days}
    assert [d for d, state in states.items() if state != "success"] == [broken]
    for day in days:
        if day != broken:
            ours, theirs = read_partition_manifest(backfilled, day), read_partition_manifest(daily, day)
            assert ours.data_sha256 == theirs.data_sha256, day
