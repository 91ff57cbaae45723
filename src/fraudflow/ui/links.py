"""Extra links from fraudflow's tasks to their evidence, as Airflow shows them on a task.

Global operator links (``AirflowPlugin.global_operator_extra_links``): the api-server asks each
link for its URL when a task instance's page opens, so the tasks need no change and runs made
by ``make demo`` (``dag.test()``) get them too. A link reads what the task already returned
(its ``return_value`` XCom row) or, for a ``validate_batch`` that quarantined its file (a failed
task returns nothing), the day's quarantine record. Where a link does not apply it returns
"", which Airflow shows as no link.

The XCom row is read from the metadata DB with the api-server's session: ``XCom.get_value``
needs a task supervisor and raises ImportError in the api-server (apache/airflow#59093, still
in 3.3.2), which would turn the whole links response into a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from airflow.sdk import BaseOperatorLink

Finder = Callable[[Any, dict[str, Any], Any], str | None]  # (settings, return value | {}, ti_key) -> URL


def _return_value(ti_key: Any, task_id: str | None = None) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        raw = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == ti_key.dag_id,
                XComModel.run_id == ti_key.run_id,
                XComModel.task_id == (task_id or ti_key.task_id),
                XComModel.map_index == (ti_key.map_index if task_id is None else -1),
                XComModel.key == "return_value",
            )
        )
    if not isinstance(raw, str | bytes):
        return raw  # the JSON column gives dicts and lists back decoded
    try:
        return json.loads(raw)
    except ValueError:
        return raw if isinstance(raw, str) else None  # a plain string value comes back as itself


def _first(urls: list[str | None]) -> str | None:
    return next((u for u in urls if u), None)


def _data_docs(settings: Any, value: Any, ti_key: Any) -> str | None:
    from fraudflow.ingestion.quarantine import REASON_FILE, QuarantineRecord
    from fraudflow.ui.overview import artifact_url

    if isinstance(value, dict) and value.get("data_docs"):
        return _first([artifact_url(settings, d) for d in value["data_docs"]])
    # The task failed (nothing returned): the batch was quarantined by this run. Its report is
    # the current one or, after a release or a later attempt, one kept beside it.
    for reason in sorted(settings.quarantine_dir.glob(f"**/{REASON_FILE}"), reverse=True):
        record = QuarantineRecord.model_validate_json(reason.read_text())
        if record.run_id == ti_key.run_id:
            return _first([artifact_url(settings, d) for d in record.data_docs])
    return None


def _mlflow_run(settings: Any, value: Any, ti_key: Any) -> str | None:
    from fraudflow.ui.overview import MOUNT

    if not isinstance(value, dict):
        return None
    run_id = value.get("run_id") or (value.get("best") or {}).get("run_id")
    return f"{MOUNT}/mlflow/runs/{run_id}" if run_id else None


def _model_card(settings: Any, value: Any, ti_key: Any) -> str | None:
    from fraudflow.ui.overview import MOUNT

    if not isinstance(value, dict):
        return None
    version = value.get("version")
    return f"{MOUNT}/versions/{version}/card" if version else None


def _drift_report(settings: Any, value: Any, ti_key: Any) -> str | None:
    from fraudflow.ui.overview import artifact_url

    if not isinstance(value, dict):
        return None
    return artifact_url(settings, (value.get("input_drift") or {}).get("report_html"))


def _decision(settings: Any, value: Any, ti_key: Any) -> str | None:
    from fraudflow.ui.overview import MOUNT

    if not isinstance(value, dict) or value.get("revision") is None:
        return None
    return f"{MOUNT}/#decision-{value['revision']}-{value.get('stage', '')}"


class _EvidenceLink(BaseOperatorLink):
    """One kind of evidence; ``finders`` says for which (dag_id, task_id) and how to find it."""

    name: ClassVar[str] = ""
    finders: ClassVar[dict[tuple[str, str], Finder]] = {}

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        finder = self.finders.get((ti_key.dag_id, ti_key.task_id))
        if finder is None:
            return ""
        from fraudflow.settings import get_settings

        try:
            return finder(get_settings(), _return_value(ti_key) or {}, ti_key) or ""
        except Exception:  # a link must never break the task page
            return ""


class DataDocsLink(_EvidenceLink):
    name = "GX Data Docs"
    finders = {("ingest_transactions", "validate_batch"): _data_docs}


class MlflowRunLink(_EvidenceLink):
    name = "MLflow run"
    finders = {
        ("train_model", "train_candidate"): _mlflow_run,
        ("train_model", "evaluate_gate"): _mlflow_run,
        ("train_model", "register_challenger"): _mlflow_run,
    }


class ModelCardLink(_EvidenceLink):
    name = "Model card"
    finders = {("train_model", "register_challenger"): _model_card}


class DriftReportLink(_EvidenceLink):
    name = "Drift report"
    finders = {("monitor_drift", "check_champion"): _drift_report}


class DecisionLink(_EvidenceLink):
    name = "Rollout decision"
    finders = {("deploy_model", t): _decision for t in ("shadow", "canary", "promote", "rollback")}


EVIDENCE_LINKS = [DataDocsLink(), MlflowRunLink(), ModelCardLink(), DriftReportLink(), DecisionLink()]
