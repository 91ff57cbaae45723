"""What the fraudflow page in the Airflow UI shows, read from the home and the registry.

One function per section, each returning plain data (the page and ``/fraudflow/api/overview``
render the same): serving now, model versions, rollout decisions, drift checks, data, alerts.
Nothing here writes; a section whose source does not exist yet is empty, not an error.
Artifact paths become links through :func:`artifact_url` (served by the plugin from the home
only, see ``fraudflow.ui.app``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from fraudflow import tags
from fraudflow.layout import PARTITION_GLOB, partition_day
from fraudflow.settings import Settings

MOUNT = "/fraudflow"  # where the Airflow api-server mounts the plugin's app


def artifact_url(settings: Settings, path: str | Path | None) -> str | None:
    """``/fraudflow/artifacts/<path relative to the home>`` for a file under the home (a path or a
    ``file://`` URL, as GX and the tasks print them); None for anything else."""
    if not path:
        return None
    text = str(path)
    if text.startswith("file://"):
        text = unquote(urlsplit(text).path)
    try:
        relative = Path(text).resolve().relative_to(settings.root.resolve())
    except ValueError:
        return None
    return f"{MOUNT}/artifacts/{quote(relative.as_posix())}"


def serving_now(settings: Settings) -> dict[str, Any]:
    """The deployment state (champion, challenger, mode, revision, canary share) and whether
    the scoring service answers ``/healthz`` right now."""
    import httpx

    from fraudflow.serving.state import read_state

    state = read_state(settings)
    try:
        answer = httpx.get(f"{settings.serving_url}/healthz", timeout=2)
        health = {
            "up": answer.status_code == 200,
            "detail": answer.json() if answer.status_code == 200 else answer.text,
        }
    except (httpx.HTTPError, ValueError) as exc:
        health = {"up": False, "detail": f"{type(exc).__name__}: {exc}"}
    return {"url": settings.serving_url, "state": json.loads(state.model_dump_json()), "health": health}


def _mlflow_run_url(settings: Settings, experiment_id: str | None, run_id: str | None) -> str | None:
    if not run_id or not experiment_id:
        return None
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_versions(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    """The newest registered versions with aliases, why they exist, the gate's verdict and
    checks, metrics, rollout outcome and approval, and links to the card and the MLflow run."""
    from mlflow.exceptions import MlflowException

    from fraudflow.registry import MODEL_NAME, _client, aliases

    client = _client(settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases(settings).items():  # search results carry no aliases (MLflow 3.17)
        by_version.setdefault(version, []).append(alias)
    try:
        found = client.search_model_versions(
            f"name='{MODEL_NAME}'", max_results=limit, order_by=["version_number DESC"]
        )
    except MlflowException:
        return []
    versions = []
    for mv in found:
        t = dict(mv.tags or {})
        try:
            experiment = client.get_run(mv.run_id).info.experiment_id if mv.run_id else None
        except MlflowException:
            experiment = None
        card = t.get(tags.MODEL_CARD)
        gate_md = Path(t[tags.TRAINING_SET]) / "gate.md" if t.get(tags.TRAINING_SET) else None
        versions.append(
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "family": t.get(tags.CANDIDATE),
                "reason": t.get(tags.REASON, ""),
                "failed_checks": t.get(tags.FAILED_CHECKS),
                "gate": t.get(tags.GATE),
                "gate_reason": t.get(tags.GATE_REASON, ""),
                "gate_checks": artifact_url(settings, gate_md) if gate_md and gate_md.exists() else None,
                "metrics": {
                    "AP": t.get(tags.AVERAGE_PRECISION),
                    "AUC ROC": t.get(tags.AUC_ROC),
                    "CP@100": t.get(tags.CARD_PRECISION_AT_100),
                },
                "rollout": t.get(tags.ROLLOUT),
                "rollout_reason": t.get(tags.ROLLOUT_REASON),
                "approval": t.get(tags.APPROVAL),
                "approved_by": t.get(tags.APPROVED_BY),
                "model_card": artifact_url(settings, Path(card).with_suffix(".html")) if card else None,
                "mlflow_run": _mlflow_run_url(settings, experiment, mv.run_id),
                "run_id": mv.run_id,
            }
        )
    return versions


def rollout_decisions(settings: Settings, limit: int = 40) -> list[dict[str, Any]]:
    """The decision log, newest first: each stage's verdict with its checks."""
    from fraudflow.deployment.decisions import read_decisions

    return list(reversed(read_decisions(settings)[-limit:]))


def drift_checks(settings: Settings, limit: int = 14) -> list[dict[str, Any]]:
    """The latest monitoring run per judged day, newest day first, with its Evidently reports."""
    root = settings.root / "monitoring"
    latest: dict[str, Path] = {}
    for summary in sorted(root.glob("*/*/summary.json"), key=lambda p: p.stat().st_mtime):
        latest[summary.parent.parent.name] = summary
    out = []
    for day in sorted(latest, reverse=True)[:limit]:
        s = json.loads(latest[day].read_text())
        out.append(
            {
                "as_of": day,
                "champion_version": s.get("champion_version"),
                "passed": not s.get("failed_checks"),
                "failed_checks": s.get("failed_checks", []),
                "checks": {
                    name: {"passed": s[name].get("passed"), "reason": s[name].get("reason", "")}
                    for name in ("input_drift", "prediction_drift", "performance")
                    if name in s
                },
                "input_report": artifact_url(settings, s.get("input_drift", {}).get("report_html")),
                "prediction_report": artifact_url(settings, s.get("prediction_drift", {}).get("report_html")),
            }
        )
    return out


def data_days(settings: Settings, limit: int = 30) -> dict[str, Any]:
    """Published days (newest first), quarantined days with their reasons and reports, and the
    GX Data Docs index."""
    from fraudflow.ingestion.quarantine import list_quarantined

    published = sorted(
        (partition_day(p).isoformat() for p in settings.transactions_dir.glob(PARTITION_GLOB) if p.is_dir()),
        reverse=True,
    )
    quarantined = [
        {
            "day": r.day.isoformat(),
            "file": Path(r.file).name,
            "stage": r.stage,
            "summary": r.summary,
            "reason_file": artifact_url(settings, Path(r.folder) / "reason.json"),
            "data_docs": [u for u in (artifact_url(settings, d) for d in r.data_docs) if u],
        }
        for r in sorted(list_quarantined(settings), key=lambda r: r.day, reverse=True)
    ]
    index = next(iter(sorted(settings.gx_dir.glob("**/data_docs/**/index.html"))), None)
    return {
        "published_count": len(published),
        "published": published[:limit],
        "quarantined": quarantined,
        "data_docs_index": artifact_url(settings, index) if index else None,
    }


def recent_alerts(settings: Settings, limit: int = 30) -> list[dict[str, Any]]:
    from fraudflow.monitoring.alerts import read_alerts

    return list(reversed(read_alerts(settings)[-limit:]))


def overview(settings: Settings) -> dict[str, Any]:
    return {
        "home": str(settings.root),
        "serving": serving_now(settings),
        "versions": model_versions(settings),
        "decisions": rollout_decisions(settings),
        "monitoring": drift_checks(settings),
        "data": data_days(settings),
        "alerts": recent_alerts(settings),
    }
