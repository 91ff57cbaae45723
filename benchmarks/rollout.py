"""Rollout speed and safety under steady load: how long a registered challenger takes to reach
production through shadow and canary, how many client requests fail while the service
switches (promote, then a rollback of a drilled bad challenger), and what a worker killed with
SIGKILL in the middle of a canary costs.

Targets: failed requests during promote and during rollback: 0 (at 200 req/s offered); with a
worker killed during canary, the rollout still decides and no request fails except those in
flight on the killed worker.

Steps: build a serving home like ``tests.helpers.build_serving_home`` (or reuse ``--home``),
start ``bentoml serve`` with 2 workers, offer an open-loop load of ``--rate`` req/s from a
separate process (``_bench.open_loop``; the rate reached is reported), then:

1. register a good challenger (a copy of the champion) and drive ``run_stage`` shadow ->
   canary -> ``promote`` with the default request counts;
2. register a challenger whose every second call fails and drive it to its automatic rollback;
3. register another good challenger and, 2 s into its canary, ``kill -9`` one of the two
   workers; the rollout goes on. A failed request counts as "in flight on the killed worker"
   when it was sent before the kill and answered (with an error) after it; any other failure
   is a request the kill should not have cost.

Client failures are counted per phase. The load process runs on the same 2 cores as the service.

    .venv/bin/python benchmarks/rollout.py [--home DIR] [--rate 200]
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from _bench.env import use_home
from _bench.open_loop import OpenLoopLoad
from _bench.output import log, print_table


class Phases:
    """Named time spans on the monotonic clock, to bucket the load's requests by what the
    service was doing when each was sent."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, str]] = [(time.monotonic(), "warm-up")]

    def enter(self, name: str) -> None:
        self.starts.append((time.monotonic(), name))

    def run(self, name: str, fn):
        self.enter(name)
        return fn()

    def of(self, instant: float) -> str:
        name = self.starts[0][1]
        for start, phase in self.starts:
            if start > instant:
                break
            name = phase
        return name


def service_workers(service_pid: int) -> list:
    """The worker processes of a ``bentoml serve`` (children running the service), oldest first."""
    import psutil

    children = psutil.Process(service_pid).children(recursive=True)
    workers = [p for p in children if any("worker" in part for part in p.cmdline())]
    return sorted(workers, key=lambda p: p.create_time())


class WorkerKill(threading.Thread):
    """SIGKILL one service worker ``after`` seconds into the canary of ``version``."""

    def __init__(self, settings, service_pid: int, version: str, after: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.settings, self.service_pid, self.version, self.after = settings, service_pid, version, after
        self.killed_at: float | None = None
        self.killed_pid: int | None = None
        self.workers_before = 0

    def run(self) -> None:
        from fraudflow.serving.state import read_state

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = read_state(self.settings)
            if state.mode == "canary" and state.challenger == self.version:
                break
            time.sleep(0.1)
        else:
            return
        time.sleep(self.after)
        workers = service_workers(self.service_pid)
        self.workers_before = len(workers)
        victim = workers[-1]
        self.killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        self.killed_pid = victim.pid


def challenger_copy(settings, reason: str) -> str:
    from fraudflow import registry, tags

    champion = registry.version_by_alias(settings, registry.CHAMPION)
    keep = {k: v for k, v in champion.tags.items() if k not in (tags.ROLLOUT, tags.ROLLOUT_REASON)}
    return registry.register_challenger(
        settings, model_uri=champion.source, run_id=champion.run_id, tags={**keep, tags.REASON: reason}
    ).version


def roll_out(settings, phases: Phases, url: str, version: str, drill: dict | None, label: str) -> dict:
    """shadow -> canary -> promote or rollback, as deploy_model drives it."""
    from fraudflow.deployment.controller import promote, reject_challenger, run_stage
    from fraudflow.serving.state import read_state

    started = time.perf_counter()
    revision = read_state(settings).revision
    stages = {}
    for stage in ("shadow", "canary"):
        requests = settings.shadow_requests if stage == "shadow" else settings.canary_requests
        decision = phases.run(
            f"{label}: {stage}",
            lambda s=stage, n=requests, r=revision: run_stage(
                settings, url, stage=s, challenger=version, requests=n, expected_revision=r, drill=drill
            ),
        )
        stages[stage], revision = decision, decision["revision"]
        if not decision["check"]["passed"]:
            break
    if all(d["check"]["passed"] for d in stages.values()):
        phases.run(f"{label}: promote", lambda: promote(settings, url, version=version, expected_revision=revision))
        outcome = "promoted"
    else:
        reason = next(d["check"]["reason"] for d in stages.values() if not d["check"]["passed"])
        phases.run(
            f"{label}: rollback",
            lambda: reject_challenger(settings, reason, url, version=version, expected_revision=revision),
        )
        outcome = f"rolled back ({reason})"
    seconds = time.perf_counter() - started
    phases.enter(f"{label}: after")
    time.sleep(2)  # requests in flight across the switch land in the phase that sent them
    replay_failed = sum(d.get("replay", {}).get("failed", 0) for d in stages.values())
    return {"version": version, "outcome": outcome, "seconds": seconds, "replay_failed": replay_failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    use_home(args.home, prefix="fraudflow-bench-rollout-")
    from fraudflow.deployment.controller import replay_sample, score_bodies
    from fraudflow.deployment.service_process import ServingProcess
    from fraudflow.settings import get_settings
    from tests.helpers import build_serving_home

    settings = get_settings()
    log(f"building a serving home under {settings.root}")
    build_serving_home(settings)
    service = ServingProcess(settings, env={"FRAUDFLOW_SERVING_WORKERS": "2"}).start()
    bodies = score_bodies(replay_sample(settings, 200))
    phases, rollouts = Phases(), []
    kill = None
    try:
        with OpenLoopLoad(service.url, bodies, args.rate) as load:
            time.sleep(3)
            good = challenger_copy(settings, "benchmark: a good challenger")
            log(f"v{good} registered: rolling out under load")
            rollouts.append(roll_out(settings, phases, service.url, good, None, "good"))
            bad = challenger_copy(settings, "benchmark: a challenger failing every second call")
            log(f"v{bad} registered (drill): rolling out under load")
            drill = {"stage": "canary", "challenger_fail_every": 2}
            rollouts.append(roll_out(settings, phases, service.url, bad, drill, "bad"))
            third = challenger_copy(settings, "benchmark: a good challenger, one worker killed in canary")
            log(f"v{third} registered: rolling out under load, kill -9 of one worker 2 s into canary")
            kill = WorkerKill(settings, service.proc.pid, third)
            kill.start()
            rollouts.append(roll_out(settings, phases, service.url, third, None, "kill"))
            kill.workers_after = len(service_workers(service.proc.pid))
    finally:
        service.stop()
    report(load, phases, args.rate, rollouts, kill)


def report(load: OpenLoopLoad, phases: Phases, rate: float, rollouts: list[dict], kill: WorkerKill | None) -> None:
    print_table(
        "rollout: registered -> decided, under steady load",
        ["rollout", "version", "outcome", "seconds", "controller replay failures"],
        [
            [label, f"v{r['version']}", r["outcome"], f"{r['seconds']:.1f}", str(r["replay_failed"])]
            for label, r in zip(("good", "bad (drill)", "kill"), rollouts, strict=False)
        ],
        packages=["bentoml", "mlflow"],
    )
    by_phase: dict[str, dict[str, int]] = {}
    for request in load.requests:
        statuses = by_phase.setdefault(phases.of(request.sent), {})
        statuses[request.status] = statuses.get(request.status, 0) + 1
    order = [name for _, name in phases.starts]
    phase_rows = []
    for phase in order:
        statuses = by_phase.get(phase, {})
        sent = sum(statuses.values())
        failed = sent - statuses.get("200", 0)
        phase_rows.append([phase, str(sent), str(failed), ", ".join(f"{k}: {n}" for k, n in sorted(statuses.items()))])
    print_table(
        f"client requests by phase (offered {rate:.0f} req/s, 2 workers)",
        ["phase", "sent", "failed", "statuses"],
        phase_rows,
        note=f"target: 0 failed during promote and rollback; rate reached over the run: {load.reached():.0f} req/s "
        f"from {load.connections} keep-alive connections in a separate process, on the service's 2 cores",
    )
    if kill is None or kill.killed_at is None:
        log("no worker was killed (the kill rollout did not reach canary)")
        return
    failed = [r for r in load.requests if not r.ok]
    in_flight = [r for r in failed if r.in_flight_at(kill.killed_at)]
    other = [r for r in failed if not r.in_flight_at(kill.killed_at) and phases.of(r.sent).startswith("kill:")]
    answered = [r for r in load.requests if r.in_flight_at(kill.killed_at)]
    print_table(
        "kill -9 of one of 2 workers, 2 s into canary",
        [
            "workers before / after",
            "in flight at the kill",
            "failed, in flight on the killed worker",
            "failed, not in flight",
            "rollout outcome",
        ],
        [
            [
                f"{kill.workers_before} / {kill.workers_after}",
                str(len(answered)),
                str(len(in_flight)),
                str(len(other)),
                rollouts[-1]["outcome"],
            ]
        ],
        note="target: the rollout decides; 'failed, not in flight' = 0 (failures during the kill rollout that "
        "were not in flight when the kill landed). 'In flight at the kill' counts both workers' requests.",
    )


if __name__ == "__main__":
    main()
