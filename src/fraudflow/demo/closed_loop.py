"""``make demo``: the whole closed loop on embedded defaults, with progress and a summary.

Part one puts a first model in production: simulate, ingest the history through Airflow, build
features, train, gate, register, build the Bento, deploy. Part two lets the world change: new
days land with drift injected (bigger amounts, more night-time spending), the live service
answers a stream of their transactions, ``monitor_drift`` fails and triggers ``train_model``,
and the new challenger goes through the gate and the staged rollout (shadow, canary, then
promote or rollback), shown either way.

Each stage calls the same DAGs a scheduler would; the demo only drives them with
``dag.test()`` and plays the scheduler for the runs they trigger.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
from pydantic import BaseModel, Field
from rich.console import Console

from fraudflow import tags
from fraudflow.demo.stages import StageRecord, Stages, ingest_days, run_dag_logged, run_triggered
from fraudflow.deployment.decisions import read_decisions
from fraudflow.orchestration.runtime import (
    DagRunOutcome,
    as_logical_date,
    prepare_airflow,
)
from fraudflow.settings import Settings
from fraudflow.tracking import TRAINING_EXPERIMENT

T = TypeVar("T")


class DemoConfig(BaseModel):
    start: dt.date = dt.date(2018, 4, 1)
    days: int = Field(90, ge=30)  # undrifted history before the first model
    drift_days: int = Field(21, ge=7)  # then this many drifted days (21: the retraining window sees them)
    amount_scale: float = Field(1.2, gt=0)  # 1.5 multiplies scenario-1 frauds (amount > 220) by ~40
    night_share: float = Field(0.2, ge=0, le=1)
    customers: int = 5000
    terminals: int = 10000
    seed: int = 0
    replay_per_day: int = Field(150, ge=1)  # live requests per drifted day sent to the service
    candidate_params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def history_end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    @property
    def drift_start(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days)

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days + self.drift_days - 1)


class DemoReport(BaseModel):
    ok: bool
    stages: list[StageRecord]
    dag_runs: list[DagRunOutcome]
    monitoring_summary: str | None = None
    failed_checks: list[str] = []
    triggered_training: int = 0
    retrain_outcome: str = ""  # promoted | rolled back | refused by the gate | ...
    drill_outcome: str = ""  # the drilled bad challenger: rolled back: <reason> (expected)


def _ingested(outcomes: list[DagRunOutcome]) -> str:
    good = sum(o.state == "success" for o in outcomes)
    return f"{good}/{len(outcomes)} days published" if good == len(outcomes) else f"FAILED: {good}/{len(outcomes)}"


def _land_and_ingest(
    settings: Settings,
    frame: pd.DataFrame,
    stages: Stages,
    console: Console,
    *,
    start: dt.date,
    end: dt.date,
    what: str,
    backfill: bool = False,
) -> None:
    """Days ``start``..``end`` land as files, then go through ``ingest_transactions`` one logical
    date at a time, or (``backfill``: a first load of history) one ``backfill_transactions`` run."""
    from fraudflow.demo.simulate import write_landing_files

    stages.run(
        f"land the {what}",
        lambda: write_landing_files(frame, settings.landing_dir, days=(start, end)),
        lambda w: f"{len(w)} daily files from {start}",
    )
    if backfill:
        stages.dag(
            f"backfill_transactions ({what}, one run)",
            lambda: run_dag_logged(settings, "backfill_transactions", logical_date=None),
        )
        return
    outcomes = stages.run(
        f"ingest_transactions x day ({what})",
        lambda: ingest_days(settings, start=start, end=end, console=console),
        _ingested,
    )
    stages.runs.extend(outcomes)


def replay_new_days(settings: Settings, url: str, *, start: dt.date, end: dt.date, per_day: int, seed: int):
    """A stream of the new days' transactions, in time order, answered by the live service."""
    from fraudflow.deployment.controller import replay_requests
    from fraudflow.lake import read_lake

    lake = read_lake(settings, start=start, end=end)
    sample = (
        lake.groupby(lake["TX_DATETIME"].dt.date, group_keys=False)
        .apply(lambda day: day.sample(n=min(per_day, len(day)), random_state=seed))
        .sort_values("TX_DATETIME")
    )
    return replay_requests(url, sample, token=settings.api_token)


def run_demo(settings: Settings, config: DemoConfig, console: Console) -> DemoReport:
    """The closed loop; returns what happened (``ok`` when every stage did what it should)."""
    from fraudflow.demo.simulate import summarise
    from fraudflow.demo.summary import print_summary

    stages = Stages(console)
    console.print(
        f"fraudflow demo: {config.days} days from {config.start}, then {config.drift_days} drifted days "
        f"(amounts x{config.amount_scale}, {config.night_share:.0%} moved to night); home {settings.root}"
    )
    console.print(f"Airflow task logs: {settings.root / 'logs' / 'airflow-dag-test.log'}")
    console.rule("part 1: history -> first model in production")
    frame = _first_model_in_production(settings, config, stages, console)
    report = DemoReport(ok=False, stages=stages.records, dag_runs=stages.runs)
    _with_live_service(
        settings, stages, lambda url: _drift_round(settings, config, frame, stages, url, report, console)
    )

    report.stages, report.dag_runs = stages.records, stages.runs
    report.ok = (
        all(o.state == "success" for o in stages.runs)
        and bool(report.failed_checks)
        and report.triggered_training == 1
        and bool(report.retrain_outcome)
        and report.drill_outcome.startswith("rolled back")
    )
    print_summary(settings, config, report, summarise(frame), console)
    return report


def _first_model_in_production(
    settings: Settings, config: DemoConfig, stages: Stages, console: Console
) -> pd.DataFrame:
    """Simulate the world, ingest its history, build features, train, gate, register, deploy."""
    from fraudflow.demo.simulate import DriftSpec, SimulationConfig, simulate_transactions

    drift = DriftSpec(start=config.drift_start, amount_scale=config.amount_scale, night_share=config.night_share)
    world = SimulationConfig(
        start=config.start,
        days=config.days + config.drift_days,
        customers=config.customers,
        terminals=config.terminals,
        seed=config.seed,
        drift=drift,
    )
    frame = stages.run("simulate", lambda: simulate_transactions(world), lambda f: f"{len(f):,} transactions")
    stages.run("prepare Airflow (db migrate)", lambda: prepare_airflow(settings))
    _land_and_ingest(
        settings, frame, stages, console, start=config.start, end=config.history_end, what="history", backfill=True
    )
    first_day = as_logical_date(config.history_end)
    stages.dag("build_features (Feast)", lambda: run_dag_logged(settings, "build_features", logical_date=first_day))
    stages.dag(
        "train_model (gate, register challenger)",
        lambda: run_dag_logged(
            settings,
            "train_model",
            logical_date=first_day,
            conf={"reason": "demo: first model", "candidate_params": config.candidate_params},
        ),
    )
    stages.dag(
        "deploy_model (bento, first deployment)",
        lambda: run_dag_logged(settings, "deploy_model", logical_date=first_day, conf={"build_bento": True}),
    )
    return frame


def _with_live_service(settings: Settings, stages: Stages, body: Callable[[str], None]) -> None:
    """Start ``bentoml serve``, point deploy_model at it, run ``body(url)``, stop it (which
    flushes the prediction log) and restore the environment, whatever happens."""
    from fraudflow.deployment.service_process import ServingProcess

    service = stages.run(
        "start the scoring service (bentoml serve)",
        lambda: ServingProcess(settings).start(),
        lambda s: f"{s.url} ({s.log_path.name})",
    )
    saved_url = os.environ.get("FRAUDFLOW_SERVING_URL")
    os.environ["FRAUDFLOW_SERVING_URL"] = service.url  # deploy_model stages against this service
    try:
        body(service.url)
    finally:
        stages.run("stop the scoring service (flushes the prediction log)", service.stop, lambda rc: f"exit {rc}")
        if saved_url is None:
            os.environ.pop("FRAUDFLOW_SERVING_URL", None)
        else:
            os.environ["FRAUDFLOW_SERVING_URL"] = saved_url


def _drift_round(
    settings: Settings,
    config: DemoConfig,
    frame: pd.DataFrame,
    stages: Stages,
    url: str,
    report: DemoReport,
    console: Console,
) -> None:
    """Drifted days land, the live service answers them, ``monitor_drift`` fires retraining,
    and the retrained challenger (if the gate lets it through) is rolled out."""
    console.rule("part 2: the world drifts -> monitor_drift -> retraining -> staged rollout")
    _land_and_ingest(
        settings, frame, stages, console, start=config.drift_start, end=config.end, what="new days (drift injected)"
    )
    last = as_logical_date(config.end)
    stages.dag("build_features (Feast)", lambda: run_dag_logged(settings, "build_features", logical_date=last))
    stages.run(
        "serve a stream of the new days' transactions",
        lambda: replay_new_days(
            settings, url, start=config.drift_start, end=config.end, per_day=config.replay_per_day, seed=config.seed
        ),
        lambda r: (
            f"{r.ok}/{r.sent} answered 200 ({r.sent / max(r.seconds, 1e-9):.0f} req/s)"
            if r.failed == 0
            else f"FAILED: {r.statuses}"
        ),
    )
    time.sleep(settings.prediction_flush_seconds + 0.5)  # the service's log buffer reaches disk
    _monitor(settings, config, stages, report, console)
    retrained = stages.run(
        "train_model (triggered by monitor_drift)",
        lambda: run_triggered(settings, "train_model"),
        lambda runs: f"{len(runs)} run(s): {', '.join(r.state for r in runs)}" if runs else "FAILED: none triggered",
    )
    stages.runs.extend(retrained)
    report.triggered_training = len(retrained)
    if retrained:
        _roll_out_challenger(settings, stages, report, console, logical_date=last)
    _drill_bad_challenger(settings, stages, report, console, logical_date=last)


def _monitor(settings: Settings, config: DemoConfig, stages: Stages, report: DemoReport, console: Console) -> None:
    monitored = stages.dag(
        "monitor_drift (Evidently)",
        lambda: run_dag_logged(
            settings, "monitor_drift", logical_date=as_logical_date(config.end), conf={"as_of": config.end.isoformat()}
        ),
    )
    summary = _monitoring_summary(settings, config.end, monitored.run_id)
    if summary:
        report.monitoring_summary = summary["summary_json"]
        report.failed_checks = summary["failed_checks"]
        for check in summary["failed_checks"]:
            console.print(f"   [yellow]failed check[/] {check}")


def _roll_out_challenger(
    settings: Settings, stages: Stages, report: DemoReport, console: Console, *, logical_date: dt.datetime
) -> None:
    from fraudflow.registry import CHALLENGER, aliases

    challenger = aliases(settings).get(CHALLENGER)
    if challenger is None:
        report.retrain_outcome = f"refused by the gate (champion keeps serving): {_latest_gate_reason(settings)}"
        console.print(f"   [yellow]{report.retrain_outcome}[/]")
        return
    stages.dag(
        f"deploy_model v{challenger} (shadow, canary, decide)",
        lambda: run_dag_logged(settings, "deploy_model", logical_date=logical_date, conf={"build_bento": True}),
    )
    report.retrain_outcome = _rollout_outcome(settings, challenger)
    console.print(f"   v{challenger}: {report.retrain_outcome}")


def _drill_bad_challenger(
    settings: Settings, stages: Stages, report: DemoReport, console: Console, *, logical_date: dt.datetime
) -> None:
    """A challenger that fails every second call goes through deploy_model: the canary sees
    its failures (the champion covered every answer) and rolls it back by itself."""
    from fraudflow import registry

    champion = registry.version_by_alias(settings, registry.CHAMPION)
    # The drill rehearses failures, not a new model: the champion's own model, already live,
    # without the held-out scores of a week that drift may have made stale, nor the champion's
    # model card (it describes the champion's version, not this copy).
    dropped = (tags.ROLLOUT, tags.ROLLOUT_REASON, tags.TEST_SCORES, tags.MODEL_CARD)
    copy_tags = {k: v for k, v in champion.tags.items() if k not in dropped}
    copy_tags[tags.REASON] = "demo drill: a challenger that fails every second call"
    drilled = registry.register_challenger(
        settings, model_uri=champion.source, run_id=champion.run_id, tags=copy_tags
    ).version
    drill = {"stage": "canary", "challenger_fail_every": 2}
    stages.dag(
        f"deploy_model v{drilled} (drill: canary fails every 2nd call)",
        lambda: run_dag_logged(
            settings, "deploy_model", logical_date=logical_date, conf={"build_bento": False, "drill": drill}
        ),
    )
    report.drill_outcome = _rollout_outcome(settings, drilled)
    console.print(f"   v{drilled}: {report.drill_outcome}")


def _latest_gate_reason(settings: Settings) -> str:
    """The newest training run's gate verdict (which check failed, by how much)."""
    import mlflow

    from fraudflow.tracking import configure_mlflow

    configure_mlflow(settings)
    runs = mlflow.search_runs(
        experiment_names=[TRAINING_EXPERIMENT], order_by=["start_time DESC"], max_results=5, output_format="list"
    )
    reasons = [r.data.tags[tags.GATE_REASON] for r in runs if tags.GATE_REASON in r.data.tags]
    return reasons[0] if reasons else "no gate verdict found"


def _monitoring_summary(settings: Settings, as_of: dt.date, run_id: str) -> dict | None:
    from fraudflow.ingestion.landing import safe_run_id

    path = settings.root / "monitoring" / as_of.isoformat() / safe_run_id(run_id) / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _rollout_outcome(settings: Settings, version: str) -> str:
    for decision in reversed(read_decisions(settings)):
        if decision.get("stage") == "promote" and str(decision.get("version")) == version:
            return "promoted to champion"
        if decision.get("stage") == "rollback" and str(decision.get("version")) == version:
            return f"rolled back: {decision.get('reason')}"
    return "no rollout decision recorded"
