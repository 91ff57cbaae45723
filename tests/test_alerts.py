"""Alert tiers against a real local webhook receiver."""

from __future__ import annotations

import datetime as dt

import pytest

from fraudflow.deployment.service_process import free_port
from fraudflow.monitoring.alerts import Alert, Tier, check_service, monitoring_alerts, read_alerts, send_alert
from tests.webhook import WebhookReceiver


@pytest.fixture()
def hooked(settings, monkeypatch):
    with WebhookReceiver() as receiver:
        monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", receiver.url)
        from fraudflow.settings import get_settings

        yield get_settings(), receiver


def _result(*, performance_failed: bool, drifted: bool) -> dict:
    """A monitor_drift result as the DAG passes it on (JSON)."""
    failed = []
    if drifted:
        failed.append("input_drift: TX_AMOUNT, TX_DURING_NIGHT")
    if performance_failed:
        failed.append("performance: average_precision (average_precision 0.41 < 0.66 - 0.10)")
    return {
        "as_of": "2018-06-20",
        "champion_version": "3",
        "summary_json": "/tmp/summary.json",
        "input_drift": {"report_html": "/tmp/input_drift.html"},
        "prediction_drift": {"report_html": "/tmp/prediction_drift.html"},
        "performance": {
            "passed": not performance_failed,
            "window_start": "2018-06-07",
            "window_end": "2018-06-13",
            "reason": "average_precision 0.41 < 0.66 - 0.10",
            "failed_metrics": ["average_precision"] if performance_failed else [],
        },
        "failed_checks": failed,
    }


def test_performance_loss_is_a_daily_alert_sent_once_a_day(hooked):
    settings, receiver = hooked
    (alert,) = monitoring_alerts(_result(performance_failed=True, drifted=False))
    assert alert.tier is Tier.daily and alert.check == "performance"
    morning = dt.datetime(2026, 11, 20, 8, tzinfo=dt.UTC)
    first, again, tomorrow = (
        send_alert(settings, alert.model_copy(update={"raised_at": morning + dt.timedelta(hours=h)}))
        for h in (0, 6, 24)
    )
    assert (first.sent, again.sent, tomorrow.sent) == (True, False, True)
    assert first.webhook_status == "200"
    assert [r["tier"] for r in receiver.received] == ["daily", "daily"]
    assert "degraded on matured labels 2018-06-07..2018-06-13" in receiver.received[0]["summary"]
    assert receiver.received[0]["details"]["failed_metrics"] == ["average_precision"]
    assert [a["sent"] for a in read_alerts(settings)] == [True, False, True]  # the log keeps all three


def test_drift_alone_is_a_weekly_alert(hooked):
    settings, receiver = hooked
    (alert,) = monitoring_alerts(_result(performance_failed=False, drifted=True))
    assert alert.tier is Tier.weekly and alert.check == "drift"
    monday = dt.datetime(2026, 11, 16, 9, tzinfo=dt.UTC)
    sent = [
        send_alert(settings, alert.model_copy(update={"raised_at": monday + dt.timedelta(days=d)})).sent
        for d in (0, 3, 6, 7)  # Mon, Thu, Sun of one ISO week, then the next Monday
    ]
    assert sent == [True, False, False, True]
    assert len(receiver.received) == 2
    assert "TX_AMOUNT" in receiver.received[0]["summary"]


def test_drift_with_performance_loss_raises_both_tiers(hooked):
    settings, _ = hooked
    alerts = monitoring_alerts(_result(performance_failed=True, drifted=True))
    assert sorted(a.tier for a in alerts) == [Tier.daily, Tier.weekly]
    assert monitoring_alerts(_result(performance_failed=False, drifted=False)) == []


def test_service_down_is_immediate_and_never_throttled(hooked):
    settings, receiver = hooked
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for _ in range(2):
        health, alerts = check_service(settings, url)
        assert not health.up
        (alert,) = alerts
        assert alert.tier is Tier.immediate and alert.check == "service_down"
        assert send_alert(settings, alert).sent
    assert [r["check"] for r in receiver.received] == ["service_down", "service_down"]
    assert url in receiver.received[0]["summary"]


def test_a_failing_webhook_is_recorded_not_raised(settings, monkeypatch):
    with WebhookReceiver(status=500) as receiver:
        monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", receiver.url)
        from fraudflow.settings import get_settings

        delivery = send_alert(get_settings(), Alert(tier=Tier.immediate, check="error_rate", summary="x"))
    assert not delivery.sent and delivery.webhook_status == "500"
    assert len(receiver.received) == 3  # tried three times (0.5 s, 1 s backoff)
    monkeypatch.setenv("FRAUDFLOW_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/nobody")
    from fraudflow.settings import get_settings

    delivery = send_alert(get_settings(), Alert(tier=Tier.immediate, check="error_rate", summary="y"))
    assert not delivery.sent and delivery.webhook_status.startswith("ConnectError")
    assert [a["sent"] for a in read_alerts(get_settings())] == [False, False]


def test_an_alert_the_webhook_did_not_take_is_not_throttled(hooked):
    """Only a delivered alert counts as sent: the day's next performance alert tries again."""
    settings, receiver = hooked
    (alert,) = monitoring_alerts(_result(performance_failed=True, drifted=False))
    receiver.status = 503
    failed = send_alert(settings, alert)
    receiver.status = 200
    retried = send_alert(settings, alert.model_copy(update={"raised_at": alert.raised_at + dt.timedelta(minutes=5)}))
    throttled = send_alert(settings, alert.model_copy(update={"raised_at": alert.raised_at + dt.timedelta(minutes=9)}))
    assert (failed.sent, retried.sent, throttled.sent) == (False, True, False)
    assert retried.webhook_status == "200" and len(receiver.received) == 4  # 3 tries, then the retry


def test_a_torn_alert_line_is_skipped_and_alerting_goes_on(settings, caplog):
    """A process killed mid-append leaves half a record: readers skip it with a warning, and the
    next alert still lands on a line of its own."""
    from fraudflow.monitoring.alerts import alerts_log

    send_alert(settings, Alert(tier=Tier.immediate, check="service_down", summary="first"))
    whole = alerts_log(settings).read_bytes()
    send_alert(settings, Alert(tier=Tier.immediate, check="service_down", summary="second"))
    written = alerts_log(settings).read_bytes()
    alerts_log(settings).write_bytes(written[: len(whole) + (len(written) - len(whole)) // 2])  # torn mid-record
    caplog.set_level("WARNING", logger="fraudflow.jsonlines")
    third = send_alert(settings, Alert(tier=Tier.daily, check="performance", summary="third"))
    assert third.sent
    assert [a["summary"] for a in read_alerts(settings)] == ["first", "third"]
    assert "torn write" in caplog.text


def test_without_a_webhook_alerts_are_logged(settings, caplog):
    caplog.set_level("WARNING", logger="fraudflow.monitoring.alerts")
    delivery = send_alert(settings, Alert(tier=Tier.weekly, check="drift", summary="TX_AMOUNT drifted"))
    assert delivery.sent and delivery.webhook_status is None
    assert "ALERT [weekly] drift: TX_AMOUNT drifted" in caplog.text
