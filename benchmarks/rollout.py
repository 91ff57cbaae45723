"""Rollout speed and safety under steady load: how long a registered challenger takes to reach
production through shadow and canary, and how many client requests fail while the service
switches (promote, then a rollback of a drilled bad challenger).

Targets: failed requests during promote and during rollback: 0 (at 200 req/s offered).

Steps: build a serving home like ``tests.helpers.build_serving_home`` (or reuse ``--home``),
start ``bentoml serve`` with 2 workers, offer an open-loop load of ``--rate`` req/s (requests
scheduled at even intervals from a pool of keep-alive connections; the rate reached is
reported), register a good challenger (a copy of the champion) and drive
``run_stage`` shadow -> canary -> ``promote`` with the default request counts, then register a
challenger whose every second call fails and drive it to its automatic rollback. Client
failures are counted per phase. The load client runs on the same 2 cores as the service.

    .venv/bin/python benchmarks/rollout.py [--home DIR] [--rate 200]
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from _bench.env import use_home
from _bench.output import log, print_table


class SteadyLoad(threading.Thread):
    """Open-loop load: request i is due at start + i / rate; statuses are kept by phase."""

    def __init__(self, url: str, bodies: list[dict], rate: float, connections: int = 8) -> None:
        super().__init__(daemon=True)
        self.url, self.bodies, self.rate, self.connections = url, bodies, rate, connections
        self.phase, self.stop_event = "warm-up", threading.Event()
        self.statuses: dict[str, dict[str, int]] = {}
        self.lock = threading.Lock()

    def _worker(self, k: int, started: float) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = k
            while not self.stop_event.is_set():
                delay = started + i / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                try:
                    code = str(client.post("/score", json=self.bodies[i % len(self.bodies)]).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                with self.lock:
                    phase = self.statuses.setdefault(self.phase, {})
                    phase[code] = phase.get(code, 0) + 1
                i += self.connections

    def run(self) -> None:
        started = self.started = time.perf_counter()
        with ThreadPoolExecutor(self.connections) as pool:
            for k in range(self.connections):
                pool.submit(self._worker, k, started)

    def in_phase(self, name: str, fn):
        self.phase = name
        started = time.perf_counter()
        result = fn()
        return result, time.perf_counter() - started


def challenger_copy(settings, reason: str) -> str:
    from fraudflow import registry, tags

    champion = registry.version_by_alias(settings, registry.CHAMPION)
    keep = {k: v for k, v in champion.tags.items() if k not in (tags.ROLLOUT, tags.ROLLOUT_REASON)}
    return registry.register_challenger(
        settings, model_uri=champion.source, run_id=champion.run_id, tags={**keep, tags.REASON: reason}
    ).version


def roll_out(settings, load: SteadyLoad, url: str, version: str, drill: dict | None) -> tuple[str, float]:
    """shadow -> canary -> promote or rollback, as deploy_model drives it; (outcome, seconds)."""
    from fraudflow.deployment.controller import promote, reject_challenger, run_stage
    from fraudflow.serving.state import read_state

    started = time.perf_counter()
    revision = read_state(settings).revision
    stages = {}
    for stage in ("shadow", "canary"):
        requests = settings.shadow_requests if stage == "shadow" else settings.canary_requests
        decision, _ = load.in_phase(
            stage,
            lambda s=stage, n=requests, r=revision: run_stage(
                settings, url, stage=s, challenger=version, requests=n, expected_revision=r, drill=drill
            ),
        )
        stages[stage], revision = decision, decision["revision"]
        if not decision["check"]["passed"]:
            break
    if all(d["check"]["passed"] for d in stages.values()):
        load.in_phase("promote", lambda: promote(settings, url, version=version, expected_revision=revision))
        outcome = "promoted"
    else:
        reason = next(d["check"]["reason"] for d in stages.values() if not d["check"]["passed"])
        load.in_phase(
            "rollback",
            lambda: reject_challenger(settings, reason, url, version=version, expected_revision=revision),
        )
        outcome = f"rolled back ({reason})"
    load.phase = f"after {outcome.split()[0]}"
    time.sleep(2)  # requests in flight across the switch land in the phase that sent them
    return outcome, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    use_home(args.home, prefix="fraudflow-bench-rollout-")
    from fraudflow.deployment.controller import replay_sample
    from fraudflow.deployment.service_process import ServingProcess
    from fraudflow.settings import get_settings
    from tests.helpers import build_serving_home

    settings = get_settings()
    log(f"building a serving home under {settings.root}")
    build_serving_home(settings)
    service = ServingProcess(settings, env={"FRAUDFLOW_SERVING_WORKERS": "2"}).start()
    bodies = [
        {
            "transaction_id": int(r.TRANSACTION_ID),
            "tx_datetime": r.TX_DATETIME.isoformat(),
            "customer_id": r.CUSTOMER_ID,
            "terminal_id": r.TERMINAL_ID,
            "tx_amount": float(r.TX_AMOUNT),
        }
        for r in replay_sample(settings, 200).itertuples(index=False)
    ]
    load = SteadyLoad(service.url, bodies, args.rate)
    try:
        load.start()
        time.sleep(3)
        good = challenger_copy(settings, "benchmark: a good challenger")
        log(f"v{good} registered: rolling out under load")
        good_outcome, good_seconds = roll_out(settings, load, service.url, good, None)
        bad = challenger_copy(settings, "benchmark: a challenger failing every second call")
        log(f"v{bad} registered (drill): rolling out under load")
        drill = {"stage": "canary", "challenger_fail_every": 2}
        bad_outcome, bad_seconds = roll_out(settings, load, service.url, bad, drill)
    finally:
        load.stop_event.set()
        load.seconds = time.perf_counter() - load.started
        service.stop()
    report(load, args.rate, [(good, good_outcome, good_seconds), (bad, bad_outcome, bad_seconds)])


def report(load: SteadyLoad, rate: float, rollouts: list[tuple[str, str, float]]) -> None:
    rows = [[f"v{v}", outcome, f"{seconds:.1f}"] for v, outcome, seconds in rollouts]
    print_table(
        "rollout: registered -> decided, under steady load",
        ["version", "outcome", "seconds"],
        rows,
        packages=["bentoml", "mlflow"],
    )
    sent_total = sum(sum(s.values()) for s in load.statuses.values())
    reached = sent_total / load.seconds
    phase_rows = []
    for phase, statuses in load.statuses.items():
        sent = sum(statuses.values())
        failed = sent - statuses.get("200", 0)
        phase_rows.append([phase, str(sent), str(failed), ", ".join(f"{k}: {n}" for k, n in sorted(statuses.items()))])
    print_table(
        f"client requests by phase (offered {rate:.0f} req/s, 2 workers)",
        ["phase", "sent", "failed", "statuses"],
        phase_rows,
        note=f"target: 0 failed during promote and rollback; rate reached over the run: {reached:.0f} req/s "
        "(the Python load client shares the 2 cores with the service and the controller's replays)",
    )


if __name__ == "__main__":
    main()
