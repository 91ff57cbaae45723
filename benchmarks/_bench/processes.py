"""CPU of process trees: the servers under test, and everyone else on the machine."""

from __future__ import annotations

import contextlib
import time

from _bench.output import log

# Processes started for a benchmark outside its process tree (a daemonized redis-server):
# their CPU counts as the benchmark's, not as other people's load.
OWN_PIDS: list[int] = []


class OtherLoad:
    """CPU used on this machine by processes outside this benchmark's tree (other people's
    tests, ...), in cores: machine-wide busy time minus what this process and its descendants
    (servers, load generators, reaped or alive) and ``OWN_PIDS`` used over the same interval."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.t0 = self.busy0 = self.mine0 = 0.0

    def _busy(self) -> float:
        t = self.psutil.cpu_times()
        return sum(getattr(t, f) for f in t._fields if f not in ("idle", "iowait", "guest", "guest_nice"))

    def _mine(self) -> float:
        total = 0.0
        extra = []
        for pid in OWN_PIDS:
            with contextlib.suppress(self.psutil.Error):
                extra.append(self.psutil.Process(pid))
        for p in [self.me, *self.me.children(recursive=True), *extra]:
            with contextlib.suppress(self.psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
        return total

    def start(self) -> OtherLoad:
        self.t0, self.busy0, self.mine0 = time.monotonic(), self._busy(), self._mine()
        return self

    def cores(self) -> float:
        wall = time.monotonic() - self.t0
        return max(0.0, (self._busy() - self.busy0) - (self._mine() - self.mine0)) / max(wall, 1e-6)


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < ``threshold`` cores over 2 s;
    returns the cores they used over the last 2 s."""
    deadline = time.monotonic() + max_wait
    while True:
        monitor = OtherLoad().start()
        time.sleep(2)
        cores = monitor.cores()
        if cores < threshold or time.monotonic() > deadline:
            if cores >= threshold:
                log(f"machine not quiet: other processes use {cores:.2f} cores; measuring anyway")
            return cores
        log(f"waiting for a quiet machine: other processes use {cores:.2f} cores")


def tree_cpu(pid: int, extra: tuple[int, ...] | list[int] = ()) -> dict[int, float]:
    """User + system CPU seconds of each process in a server's tree, plus ``extra`` processes
    it depends on (redis-server), pid -> seconds."""
    import psutil

    out = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
    for extra_pid in extra:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = psutil.Process(extra_pid).cpu_times()
            out[extra_pid] = t.user + t.system
    return out


def cpu_split(before: dict[int, float], after: dict[int, float]) -> tuple[float, str]:
    """Total CPU seconds used between two ``tree_cpu`` readings, and each busy process's share."""
    deltas = [after[p] - before.get(p, 0.0) for p in after]
    total = sum(deltas)
    shares = sorted((d / total for d in deltas if total > 0 and d / total >= 0.05), reverse=True)
    return total, "/".join(f"{s:.0%}" for s in shares)


def tree_size(pid: int) -> int:
    """Processes in the tree rooted at ``pid``."""
    import psutil

    return 1 + len(psutil.Process(pid).children(recursive=True))


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the tree rooted at ``pid``, in MB (shared pages counted per process)."""
    import psutil

    total = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
    return total / 1e6
