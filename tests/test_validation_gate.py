"""The bad-file catalogue: each case runs through the real ingestion DAG and GX checkpoint.

Each rejected file must land in quarantine byte for byte with a reason naming the broken
expectation, the lake (and so every training input) must not change, and the run must fail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudflow.demo.simulate import write_landing_files
from fraudflow.ingestion.quarantine import list_quarantined
from fraudflow.lake import list_partitions, read_partition_manifest
from fraudflow.orchestration.runtime import as_logical_date, load_dag, run_dag
from fraudflow.settings import get_settings
from tests.helpers import day_rows, tree_digest

pytestmark = pytest.mark.e2e

DAY1 = dt.date(2018, 4, 1)
HISTORY = [DAY1 + dt.timedelta(days=i) for i in range(3)]
TEMPLATE_DAY = DAY1 + dt.timedelta(days=3)


def _parquet(frame: pd.DataFrame, path: Path) -> None:
    frame.to_parquet(path, index=False)


def _shift_to(frame: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    """The template day's rows moved to ``day`` (times, day indexes) so only the defect differs."""
    out = frame.copy()
    delta = (day - TEMPLATE_DAY).days
    out["TX_DATETIME"] = out["TX_DATETIME"] + pd.Timedelta(days=delta)
    out["TX_TIME_DAYS"] += delta
    out["TX_TIME_SECONDS"] += delta * 86_400
    return out


def missing_column(f, p):
    _parquet(f.drop(columns="TX_AMOUNT"), p)


def extra_column(f, p):
    _parquet(f.assign(MERCHANT_CATEGORY="grocery"), p)


def amount_as_text(f, p):
    _parquet(f.assign(TX_AMOUNT=f["TX_AMOUNT"].map(lambda a: f"{a:.2f} EUR")), p)


def negative_amount(f, p):
    f = f.copy()
    f.loc[f.index[:3], "TX_AMOUNT"] = -5.0
    _parquet(f, p)


def null_customer(f, p):
    f = f.copy()
    f["CUSTOMER_ID"] = f["CUSTOMER_ID"].astype(object)
    f.loc[f.index[:2], "CUSTOMER_ID"] = None
    _parquet(f, p)


def duplicate_transaction_id(f, p):
    f = f.copy()
    f.loc[f.index[1], "TRANSACTION_ID"] = f["TRANSACTION_ID"].iloc[0]
    _parquet(f, p)


def rows_dated_another_day(f, p):
    f = f.copy()
    f.loc[f.index[:5], "TX_DATETIME"] += pd.Timedelta(days=1)
    _parquet(f, p)


def empty_file(f, p):
    p.write_bytes(b"")


def header_only_csv(f, p):
    f.iloc[:0].to_csv(p, index=False)


def truncated_parquet(f, p):
    _parquet(f, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def semicolon_csv(f, p):
    f.to_csv(p, index=False, sep=";")


def volume_spike_10x(f, p):
    copies = [f.assign(TRANSACTION_ID=f["TRANSACTION_ID"] + i * 10_000_000) for i in range(10)]
    _parquet(pd.concat(copies, ignore_index=True), p)


def fraud_rate_50pct(f, p):
    f = f.copy()
    f["TX_FRAUD"] = (np.arange(len(f)) % 2).astype(f["TX_FRAUD"].dtype)
    _parquet(f, p)


# (case, file name, failing task, expectation that must be named, column it must name)
CATALOGUE: list[tuple[Callable, str, str, str, str | None]] = [
    (missing_column, "t.parquet", "validate_batch", "expect_table_columns_to_match_set", None),
    (extra_column, "t.parquet", "validate_batch", "expect_table_columns_to_match_set", None),
    (amount_as_text, "t.parquet", "validate_batch", "expect_column_values_to_be_in_type_list", "TX_AMOUNT"),
    (negative_amount, "t.parquet", "validate_batch", "expect_column_values_to_be_between", "TX_AMOUNT"),
    (null_customer, "t.parquet", "validate_batch", "expect_column_values_to_not_be_null", "CUSTOMER_ID"),
    (duplicate_transaction_id, "t.parquet", "validate_batch", "expect_column_values_to_be_unique", "TRANSACTION_ID"),
    (rows_dated_another_day, "t.parquet", "validate_batch", "expect_column_values_to_be_between", "TX_DATETIME"),
    (empty_file, "t.parquet", "load_landing_file", "file parses as a table", None),
    (header_only_csv, "t.csv", "validate_batch", "expect_table_row_count_to_be_between", None),
    (truncated_parquet, "t.parquet", "load_landing_file", "file parses as a table", None),
    (semicolon_csv, "t.csv", "validate_batch", "expect_table_columns_to_match_set", None),
    (volume_spike_10x, "t.parquet", "validate_batch", "expect_table_row_count_to_be_between", None),
    (fraud_rate_50pct, "t.parquet", "validate_batch", "expect_column_mean_to_be_between", "TX_FRAUD"),
]


@pytest.fixture(scope="module")
def gate(airflow_db, tmp_path_factory, small_history):
    """A home with three clean days published (the history the batch bands are built on)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("gate") / "home"))
        settings = get_settings()
        write_landing_files(small_history, settings.landing_dir, days=(HISTORY[0], HISTORY[-1]))
        dag = load_dag("ingest_transactions")
        for day in HISTORY:
            assert run_dag(dag, logical_date=as_logical_date(day)).state == "success"
        yield settings, dag, day_rows(small_history, TEMPLATE_DAY)


@pytest.mark.parametrize(
    ("case", "name", "task", "expectation", "column"), CATALOGUE, ids=lambda c: getattr(c, "__name__", None)
)
def test_bad_file_is_quarantined_whole(gate, case, name, task, expectation, column):
    settings, dag, template = gate
    day = TEMPLATE_DAY + dt.timedelta(days=CATALOGUE.index(next(c for c in CATALOGUE if c[0] is case)))
    folder = settings.landing_dir / f"date={day}"
    folder.mkdir(parents=True)
    landing_file = folder / name
    case(_shift_to(template, day), landing_file)
    original = hashlib.sha256(landing_file.read_bytes()).hexdigest()
    lake_before = tree_digest(settings.lake_dir)

    outcome = run_dag(dag, logical_date=as_logical_date(day))

    assert outcome.state == "failed" and outcome.failed_tasks == [task]
    assert not landing_file.exists(), "a rejected file must leave landing"
    quarantined = settings.quarantine_dir / f"date={day}" / name
    assert hashlib.sha256(quarantined.read_bytes()).hexdigest() == original, "bytes must be kept whole"
    reason = json.loads((quarantined.parent / "reason.json").read_text())
    assert reason["sha256"] == original
    named = [f for f in reason["failures"] if f["expectation"] == expectation]
    assert named, f"reason does not name {expectation}: {reason['summary']}"
    if column:
        assert any(f["column"] == column for f in named), reason["summary"]
    if task == "validate_batch":
        assert reason["validation_id"].startswith("gx:landing_gate/")
        assert reason["data_docs"] and Path(reason["data_docs"][0]).exists()
    assert tree_digest(settings.lake_dir) == lake_before
    assert day not in list_partitions(settings)
    assert day in [r.day for r in list_quarantined(settings)]


def test_clean_day_passes_and_records_its_validation(gate, small_history):
    settings, dag, _ = gate
    day = HISTORY[-1] + dt.timedelta(days=20)  # far from the catalogue's days
    write_landing_files(small_history.assign(), settings.landing_dir, days=(TEMPLATE_DAY, TEMPLATE_DAY))
    template_file = settings.landing_dir / f"date={TEMPLATE_DAY}" / "transactions.parquet"
    frame = _shift_to(pd.read_parquet(template_file), day)
    template_file.unlink()
    (settings.landing_dir / f"date={day}").mkdir(parents=True)
    frame.to_parquet(settings.landing_dir / f"date={day}" / "transactions.parquet", index=False)

    assert run_dag(dag, logical_date=as_logical_date(day)).state == "success"
    manifest = read_partition_manifest(settings, day)
    assert manifest.validation_id.startswith("gx:landing_gate/")
    assert manifest.rows == len(frame)


def test_data_docs_page_names_the_failed_expectation(gate):
    settings, *_ = gate
    record = next(
        r for r in list_quarantined(settings) if r.failures[0]["expectation"] == "expect_column_values_to_be_unique"
    )
    html = "\n".join(Path(u).read_text() for u in record.data_docs)
    assert "TRANSACTION_ID" in html
    assert "values must be unique" in html


def test_every_failed_gate_is_listed_on_the_data_docs_index(gate):
    """Passing days rebuild the index at most every ``data_docs_index_seconds``; a failure
    always does, so the index a person opens lists the rejected file's validation."""
    settings, *_ = gate
    index = settings.gx_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"
    html = index.read_text()
    rejected = [r for r in list_quarantined(settings) if r.stage == "validation"]
    assert rejected, "runs after the bad-file catalogue"
    for record in rejected:
        page = Path(record.data_docs[0]).relative_to(index.parent).as_posix()
        assert page in html, page


def test_every_quarantine_raised_an_alert_naming_the_file_and_the_broken_rules(gate):
    """The failure notifier's alert for a rejected file names it, each broken expectation
    and where it was quarantined (what a person reads first)."""
    from fraudflow.monitoring.alerts import read_alerts

    settings, *_ = gate
    alerts = [a for a in read_alerts(settings) if a["check"] == "task_failed:ingest_transactions.validate_batch"]
    rejected = [r for r in list_quarantined(settings) if r.stage == "validation"]
    assert len(alerts) == len(rejected) > 0
    for record in rejected:
        (alert,) = [a for a in alerts if f"date={record.day}" in a["summary"]]
        source = settings.landing_dir / f"date={record.day}" / Path(record.file).name
        assert str(source) in alert["summary"] and f"quarantined to {record.folder}" in alert["summary"]
        for failure in record.failures:  # the summary may be cut; the details keep 4,000 characters
            assert failure["expectation"] in alert["details"]["error"], (failure["expectation"], alert["details"])
        assert alert["tier"] == "immediate"


def test_landing_parquet_metadata_attrs_are_dropped(tmp_path):
    """pandas deep-copies ``DataFrame.attrs`` on every operation; a file carrying writer attrs
    slowed the gate 1.5 s per day. ``read_batch`` keeps the rows only."""
    from fraudflow.ingestion.landing import read_batch

    frame = pd.DataFrame({"TX_AMOUNT": [1.0, 2.0]})
    frame.attrs = {"writer_notes": list(range(5000))}
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    assert pd.read_parquet(tmp_path / "t.parquet").attrs  # pandas would carry them
    assert read_batch(tmp_path / "t.parquet").attrs == {}


def test_gx_rebuilds_an_expectations_configuration_on_every_read_unless_cached():
    """GX 1.24.1's ``Expectation.configuration`` builds a new object per read (~90 reads per
    expectation per validation); within ``configurations_built_once`` it is built once, and
    built again after the expectation is assigned to."""
    import great_expectations as gx

    from fraudflow.ingestion.gx_configuration_cache import configurations_built_once

    expectation = gx.expectations.ExpectColumnValuesToBeBetween(column="TX_AMOUNT", min_value=0, max_value=10)
    assert expectation.configuration is not expectation.configuration  # the library's behaviour
    with configurations_built_once() as active:
        assert active
        first = expectation.configuration
        assert expectation.configuration is first
        expectation.max_value = 20
        assert expectation.configuration.kwargs["max_value"] == 20
    assert expectation.configuration is not expectation.configuration  # nothing kept after the block
    with configurations_built_once(enabled=False) as active:
        assert not active and expectation.configuration is not expectation.configuration


def test_the_configuration_cache_is_tied_to_the_pinned_gx():
    """The cache patches a GX internal; an upgrade of the pin must be looked at again."""
    from fraudflow.ingestion.gx_configuration_cache import PATCHED_GX_VERSION

    pins = (Path(__file__).parents[1] / "constraints.txt").read_text().splitlines()
    assert f"great_expectations=={PATCHED_GX_VERSION}" in pins


def _stored_results(settings, run_name: str) -> dict[str, list]:
    """GX's stored validation results of one run, per suite, without the run's own stamps."""
    found: dict[str, list] = {}
    for path in (settings.gx_dir / "uncommitted" / "validations").glob(f"*/{run_name}/*/*.json"):
        assert path.parts[-4] not in found, f"two stored results of {run_name}"
        found[path.parts[-4]] = json.loads(path.read_text())["results"]
    return found


def test_the_configuration_cache_leaves_every_gx_result_unchanged(gate):
    """Each file the catalogue rejected at the gate, and a clean day, judged with and without
    the cache: the same verdicts, failures, observed values and sample rows, and GX's stored
    results equal expectation by expectation."""
    from fraudflow.ingestion.landing import read_batch
    from fraudflow.ingestion.validation import LANDING_CHECKPOINT, LANDING_SUITES, landing_parameters, run_checkpoint

    settings, _, template = gate
    rejected = [r for r in list_quarantined(settings) if r.stage == "validation"]
    assert len(rejected) >= 10, "runs after the bad-file catalogue"
    cases = [(r.day, read_batch(Path(r.folder) / Path(r.file).name), False) for r in rejected]
    for day, frame, passes in [*cases, (TEMPLATE_DAY, template, True)]:
        params = {k: v for k, v in landing_parameters(settings, day).items() if k != "history"}
        verdicts, stored = [], []
        for cached in (False, True):
            run_name = f"cache-{cached}-{day}-{passes}"
            result = run_checkpoint(
                settings.model_copy(update={"gx_configuration_cache": cached}),
                frame,
                checkpoint=LANDING_CHECKPOINT,
                suites=LANDING_SUITES,
                parameters=params,
                run_name=run_name,
            )
            verdicts.append(result.model_dump(exclude={"validation_id", "data_docs", "seconds"}))
            stored.append(_stored_results(settings, run_name))
        assert verdicts[0] == verdicts[1], day
        assert set(stored[0]) == set(LANDING_SUITES) and stored[0] == stored[1], day
        assert verdicts[0]["success"] is passes, day


def test_the_verdict_and_the_details_checkpoints_agree_on_every_catalogue_file(gate):
    """A batch is judged by the ``BASIC`` checkpoint; only a failure re-runs as ``SUMMARY`` for
    the failing rows. Both must judge every catalogue file and a clean day alike, rule by
    rule; a rejected day keeps one stored result, the details run's, with its row indexes."""
    from fraudflow.ingestion.gx_checkpoints import prepared_checkpoint
    from fraudflow.ingestion.landing import read_batch
    from fraudflow.ingestion.validation import LANDING_CHECKPOINT, LANDING_SUITES, landing_parameters

    settings, _, template = gate
    rejected = [r for r in list_quarantined(settings) if r.stage == "validation"]
    assert len(rejected) >= 10, "runs after the bad-file catalogue"
    checkpoints = prepared_checkpoint(settings, LANDING_CHECKPOINT, list(LANDING_SUITES))
    cases = [(r.day, read_batch(Path(r.folder) / Path(r.file).name), False) for r in rejected]
    for day, frame, passes in [*cases, (TEMPLATE_DAY, template, True)]:
        params = {k: v for k, v in landing_parameters(settings, day).items() if k != "history"}
        judged = []
        for which in (checkpoints.verdict, checkpoints.details):
            result = which.run(batch_parameters={"dataframe": frame}, expectation_parameters=params)
            judged.append(
                [
                    (r.expectation_config.type, r.expectation_config.kwargs.get("column"), r.success)
                    for suite in result.run_results.values()
                    for r in suite.results
                ]
            )
            assert result.success is passes, (day, which.name)
        assert judged[0] == judged[1], day
    for record in rejected:
        run_name = record.validation_id.split("/")[1]
        (results,) = _stored_results(settings, run_name).values()
        failed = [r for r in results if not r["success"] and not r["exception_info"].get("raised_exception")]
        assert failed and all(
            "partial_unexpected_index_list" in r["result"] for r in failed if "unexpected_count" in r["result"]
        ), record.day
