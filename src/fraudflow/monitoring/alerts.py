"""Alerts in three tiers, so a person is paged for what needs a person now, and only then.

- ``immediate``: the scoring service is down, reports itself degraded, or its error rate or
  share of answers on default features is over its threshold (from its own ``/healthz`` and
  Prometheus ``/metrics``); sent every time it is seen.
- ``daily``: the champion's matured performance degraded; at most once per check per day.
- ``weekly``: input or prediction drift without a performance loss; at most once per check
  per ISO week (retraining already reacts; people read a digest, not a page).

Every alert is logged and appended to ``monitoring/alerts.jsonl``; when
``FRAUDFLOW_ALERT_WEBHOOK_URL`` is set it is also POSTed there as JSON. A webhook failure is
logged and recorded, never raised: alerting must not break the check that raised it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fraudflow.lake import write_atomically
from fraudflow.settings import Settings

log = logging.getLogger(__name__)


class Tier(StrEnum):
    immediate = "immediate"
    daily = "daily"
    weekly = "weekly"


class Alert(BaseModel):
    tier: Tier
    check: str  # stable key, e.g. "service_down", "performance", "drift"
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    raised_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))


class Delivery(BaseModel):
    alert: Alert
    sent: bool  # False: throttled by its tier (already sent this day/week)
    webhook_status: str | None = None  # HTTP status, the error, or None without a webhook


def alerts_log(settings: Settings) -> Path:
    return settings.root / "monitoring" / "alerts.jsonl"


def _period(tier: Tier, when: dt.datetime) -> str:
    if tier is Tier.daily:
        return when.date().isoformat()
    if tier is Tier.weekly:
        year, week, _ = when.isocalendar()
        return f"{year}-W{week:02d}"
    return when.isoformat()  # immediate: never throttled


def read_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded alert, oldest first (a torn line is skipped with a warning)."""
    from fraudflow.jsonlines import read_json_lines

    return read_json_lines(alerts_log(settings))


def _already_sent(settings: Settings, alert: Alert) -> bool:
    period = _period(alert.tier, alert.raised_at)
    return any(
        a["sent"] and a["tier"] == alert.tier and a["check"] == alert.check and a["period"] == period
        for a in read_alerts(settings)
    )


def _delivered(status: str | None) -> bool:
    return status is not None and status.isdigit() and int(status) < 300


def _post(url: str, alert: Alert, timeout: float, attempts: int = 3) -> str:
    """POST with retries (0.5 s, 1 s backoff) on a connection error or a 5xx/429; the last
    status or error."""
    import time

    import httpx

    status = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.5 * 2 ** (attempt - 1))
        try:
            response = httpx.post(url, json=json.loads(alert.model_dump_json()), timeout=timeout)
            status = str(response.status_code)
            if response.status_code < 500 and response.status_code != 429:
                return status
        except httpx.HTTPError as exc:
            status = f"{type(exc).__name__}: {exc}"
    return status


def send_alert(settings: Settings, alert: Alert) -> Delivery:
    """Log, record and (webhook configured) POST ``alert``, unless its tier already sent it
    this period. Only a delivered alert counts as sent: one the webhook did not take (after
    retries) is recorded ``sent: false``, so the next one in the period tries again."""
    if _already_sent(settings, alert):
        log.info("alert %s/%s already sent this %s period: %s", alert.tier, alert.check, alert.tier, alert.summary)
        delivery = Delivery(alert=alert, sent=False)
    else:
        level = logging.ERROR if alert.tier is Tier.immediate else logging.WARNING
        log.log(level, "ALERT [%s] %s: %s", alert.tier, alert.check, alert.summary)
        status, sent = None, True  # without a webhook the log is the delivery
        if settings.alert_webhook_url:
            status = _post(settings.alert_webhook_url, alert, settings.alert_webhook_timeout_seconds)
            sent = _delivered(status)
            if not sent:
                log.error("alert webhook %s did not take the alert: %s", settings.alert_webhook_url, status)
        delivery = Delivery(alert=alert, sent=sent, webhook_status=status)
    record = json.loads(alert.model_dump_json()) | {
        "sent": delivery.sent,
        "webhook_status": delivery.webhook_status,
        "period": _period(alert.tier, alert.raised_at),
    }
    from fraudflow.jsonlines import append_json_line

    append_json_line(alerts_log(settings), record)
    return delivery


def monitoring_alerts(result: dict[str, Any]) -> list[Alert]:
    """The tiered alerts a ``MonitoringResult`` (as JSON) calls for: performance loss is daily,
    drift alone is weekly."""
    alerts = []
    details = {
        "as_of": result["as_of"],
        "champion_version": result["champion_version"],
        "summary_json": result["summary_json"],
        "reports": [result["input_drift"]["report_html"], result["prediction_drift"]["report_html"]],
    }
    performance = result["performance"]
    if not performance["passed"]:
        alerts.append(
            Alert(
                tier=Tier.daily,
                check="performance",
                summary=f"champion v{result['champion_version']} degraded on matured labels "
                f"{performance['window_start']}..{performance['window_end']}: {performance['reason']}",
                details=details | {"failed_metrics": performance["failed_metrics"]},
            )
        )
    drifted = [c for c in result["failed_checks"] if c.startswith(("input_drift", "prediction_drift"))]
    if drifted:
        alerts.append(
            Alert(
                tier=Tier.weekly,
                check="drift",
                summary=f"drift against champion v{result['champion_version']}'s training data: " + "; ".join(drifted),
                details=details | {"failed_checks": drifted},
            )
        )
    return alerts


# -- the serving side: immediate tier ---------------------------------------------------

# Transactions answered on the request alone because of the service, not the client: a card or
# terminal seen for the first time is exact on the request alone and is not counted.
_CLIENT_REASONS = ("unknown customer", "unknown terminal")


def _counter_total(metrics_text: str, name: str, keep: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    """Sum of a Prometheus counter's ``name`` samples across labels (those ``keep`` accepts),
    read with prometheus_client's own text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name and keep(sample.labels)
    )


class ServiceHealth(BaseModel):
    url: str
    up: bool
    detail: str
    answered: float = 0  # requests answered since the previous check (or since start)
    errors: float = 0
    error_rate: float = 0.0
    degraded: float = 0  # answers scored on defaults because of the service (store, history write)
    degraded_share: float = 0.0
    degraded_reasons: list[str] = Field(default_factory=list)  # what /healthz reports


def _counters_path(settings: Settings) -> Path:
    return settings.root / "monitoring" / "serving_counters.json"


def check_service(settings: Settings, url: str) -> tuple[ServiceHealth, list[Alert]]:
    """Probe ``/healthz`` and read ``/metrics``; the error rate is over the requests answered
    since the previous check (counters are cumulative; a restart resets the baseline)."""
    import httpx

    try:
        health = httpx.get(f"{url}/healthz", timeout=5)
        metrics_text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError as exc:
        state = ServiceHealth(url=url, up=False, detail=f"{type(exc).__name__}: {exc}")
        down = f"scoring service {url} is down: {state.detail}"
        return state, [Alert(tier=Tier.immediate, check="service_down", summary=down)]
    if health.status_code != 200:
        detail = f"/healthz answered {health.status_code}: {health.text[:200]}"
        state = ServiceHealth(url=url, up=False, detail=detail)
        return state, [Alert(tier=Tier.immediate, check="service_down", summary=f"scoring service {url}: {detail}")]

    ok = _counter_total(metrics_text, "fraudflow_requests_total")
    errors = _counter_total(metrics_text, "fraudflow_errors_total")
    degraded = _counter_total(
        metrics_text, "fraudflow_degraded_total", lambda labels: labels.get("reason") not in _CLIENT_REASONS
    )
    now = {"url": url, "ok": ok, "errors": errors, "degraded": degraded}
    path = _counters_path(settings)
    try:
        previous = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:  # torn by a killed writer: count from the service's start, as a first check
        log.warning("%s is unreadable: counting from the service's start", path)
        previous = {}
    same_run = previous.get("url") == url and all(previous.get(k, 0) <= now[k] for k in ("ok", "errors", "degraded"))
    delta = {k: now[k] - previous.get(k, 0) if same_run else now[k] for k in ("ok", "errors", "degraded")}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(now)))

    answered = delta["ok"] + delta["errors"]
    rate = delta["errors"] / answered if answered else 0.0
    share = delta["degraded"] / delta["ok"] if delta["ok"] else 0.0
    body = health.json() if health.headers.get("content-type", "").startswith("application/json") else {}
    reasons = list(body.get("degraded_reasons") or [])
    state = ServiceHealth(
        url=url,
        up=True,
        detail="degraded: " + "; ".join(reasons) if reasons else "healthy",
        answered=answered,
        errors=delta["errors"],
        error_rate=round(rate, 4),
        degraded=delta["degraded"],
        degraded_share=round(share, 4),
        degraded_reasons=reasons,
    )
    alerts = []
    if answered >= settings.alert_min_requests and rate > settings.alert_error_rate:
        summary = (
            f"scoring service {url}: {rate:.1%} of {answered:.0f} requests failed "
            f"(threshold {settings.alert_error_rate:.1%})"
        )
        alerts.append(Alert(tier=Tier.immediate, check="error_rate", summary=summary, details=state.model_dump()))
    if delta["ok"] >= settings.alert_min_requests and share > settings.alert_degraded_share:
        summary = (
            f"scoring service {url}: {share:.1%} of {delta['ok']:.0f} answers scored on default features "
            f"(threshold {settings.alert_degraded_share:.1%})"
        )
        alerts.append(Alert(tier=Tier.immediate, check="degraded_share", summary=summary, details=state.model_dump()))
    if reasons:
        summary = f"scoring service {url} reports degraded: " + "; ".join(reasons)
        alerts.append(Alert(tier=Tier.immediate, check="service_degraded", summary=summary, details=state.model_dump()))
    return state, alerts
