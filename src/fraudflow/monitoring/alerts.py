"""Alerts in three tiers, so a person is paged for what needs a person now, and only then.

- ``immediate``: the scoring service is down or its error rate is over the threshold
  (from its own ``/healthz`` and Prometheus ``/metrics``); sent every time it is seen.
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
import re
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

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")


def _counter_total(metrics_text: str, name: str) -> float:
    """Sum of a Prometheus counter's samples across labels (``name_total`` lines)."""
    total = 0.0
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            total += float(match["value"])
    return total


class ServiceHealth(BaseModel):
    url: str
    up: bool
    detail: str
    answered: float = 0  # requests answered since the previous check (or since start)
    errors: float = 0
    error_rate: float = 0.0


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
    path = _counters_path(settings)
    try:
        previous = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:  # torn by a killed writer: count from the service's start, as a first check
        log.warning("%s is unreadable: counting from the service's start", path)
        previous = {}
    if previous.get("url") == url and previous.get("ok", 0) <= ok and previous.get("errors", 0) <= errors:
        d_ok, d_errors = ok - previous["ok"], errors - previous["errors"]
    else:
        d_ok, d_errors = ok, errors
    path.parent.mkdir(parents=True, exist_ok=True)
    counters = json.dumps({"url": url, "ok": ok, "errors": errors})
    write_atomically(path, lambda tmp: tmp.write_text(counters))

    answered = d_ok + d_errors
    rate = d_errors / answered if answered else 0.0
    state = ServiceHealth(
        url=url, up=True, detail="healthy", answered=answered, errors=d_errors, error_rate=round(rate, 4)
    )
    alerts = []
    if answered >= settings.alert_min_requests and rate > settings.alert_error_rate:
        alerts.append(
            Alert(
                tier=Tier.immediate,
                check="error_rate",
                summary=f"scoring service {url}: {rate:.1%} of {answered:.0f} requests failed "
                f"(threshold {settings.alert_error_rate:.1%})",
                details=state.model_dump(),
            )
        )
    return state, alerts
