"""An open-loop HTTP load in its own process, for benchmarks that change the service under load.

Request ``i`` is due at ``start + i / rate`` whatever happened to earlier ones (open loop: a
slow service does not slow the offer down). The client runs in a separate process so the
benchmark's own work (a rollout controller replaying traffic, pandas, MLflow calls) does not
compete with it for one GIL: in-process, the offered 200 req/s reached only 133.

Every request is recorded as ``(sent, seconds, status)`` with ``sent`` on the system-wide
monotonic clock, so the benchmark can bucket requests by the phases it timed itself and tell
which requests were in flight at a given instant (e.g. when a worker was killed).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Sent:
    sent: float  # time.monotonic() when the request was sent
    seconds: float  # until the answer (or the error)
    status: str  # the HTTP status, or the client exception's name

    @property
    def ok(self) -> bool:
        return self.status == "200"

    def in_flight_at(self, instant: float) -> bool:
        return self.sent <= instant <= self.sent + self.seconds


def _run(url: str, path: str, bodies: list[dict], rate: float, connections: int, stop, results) -> None:
    import httpx

    records: list[tuple[float, float, str]] = []
    lock = threading.Lock()
    started = time.monotonic()

    def connection(k: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            i = k
            while not stop.is_set():
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent = time.monotonic()
                try:
                    status = str(client.post(path, json=bodies[i % len(bodies)]).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    records.append((sent, time.monotonic() - sent, status))
                i += connections

    threads = [threading.Thread(target=connection, args=(k,), daemon=True) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(records)


class OpenLoopLoad:
    """``with OpenLoopLoad(url, bodies, rate) as load: ...``; then ``load.requests``."""

    def __init__(self, url: str, bodies: list[dict], rate: float, *, connections: int = 16, path: str = "/score"):
        ctx = mp.get_context("spawn")
        self._stop, self._results = ctx.Event(), ctx.Queue()
        self._process = ctx.Process(
            target=_run, args=(url, path, bodies, rate, connections, self._stop, self._results), daemon=True
        )
        self.rate, self.connections = rate, connections
        self.requests: list[Sent] = []
        self.started = self.stopped = 0.0

    def __enter__(self) -> OpenLoopLoad:
        self._process.start()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.stopped = time.monotonic()
        self.requests = [Sent(*r) for r in self._results.get(timeout=60)]
        self._process.join(10)

    def reached(self) -> float:
        """Requests per second actually sent over the load's life."""
        if not self.requests:
            return 0.0
        first = min(r.sent for r in self.requests)
        return len(self.requests) / max(self.stopped - first, 1e-9)
