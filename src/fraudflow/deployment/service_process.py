"""The scoring service as a process: start ``bentoml serve`` on a free port, wait until it is
healthy, stop it, and find the one the fraudflow home already runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fraudflow.registry import CHAMPION, aliases
from fraudflow.serving.state import DeploymentState, read_state, write_state
from fraudflow.settings import Settings, repo_root

SERVICE_DIR = "services/fraud_scoring"


SERVICE_TARGET = "service:FraudScoring"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServingProcess:
    """A real ``bentoml serve`` of the scoring service on loopback, in its own process group.

    ``bento``: serve that built Bento (``fraud_scoring:v<N>``, from the home's BentoML store)
    instead of the service source that follows the deployment state.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        bento: str | None = None,
    ) -> None:
        self.settings = settings
        self.bento = bento
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = settings.root / "logs" / f"bentoml-serve-{self.port}.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> ServingProcess:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "FRAUDFLOW_HOME": str(self.settings.root),
            "BENTOML_HOME": str(self.settings.bentoml_home),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            **self.extra_env,
        }
        bentoml = str(Path(sys.executable).with_name("bentoml"))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [bentoml, "serve", self.bento or SERVICE_TARGET, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.settings.root if self.bento else repo_root() / SERVICE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"bentoml serve not ready after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5)


def ensure_service(settings: Settings) -> str:
    """The URL of a live scoring service: ``serving_url`` if it answers, else (autostart) a new
    detached ``bentoml serve`` on that port, left running to serve the outcome. Empty when there
    is no champion yet (a first deployment needs no traffic to compare)."""
    from urllib.parse import urlparse

    import httpx

    if not (read_state(settings).champion or aliases(settings).get(CHAMPION)):
        return ""
    try:
        if httpx.get(f"{settings.serving_url}/readyz", timeout=2).status_code == 200:
            return settings.serving_url
    except httpx.HTTPError:
        pass
    if not settings.serving_autostart:
        raise ConnectionError(f"no scoring service at {settings.serving_url} (FRAUDFLOW_SERVING_AUTOSTART is off)")
    if read_state(settings).champion is None and aliases(settings).get(CHAMPION):
        write_state(settings, DeploymentState(champion=aliases(settings)[CHAMPION], reason="service start"))
    process = ServingProcess(settings, port=urlparse(settings.serving_url).port).start()
    (settings.serving_dir / "service.pid").write_text(str(process.proc.pid))
    return process.url


def stop_recorded_service(settings: Settings, *, warn=print) -> bool:
    """Stop the service :func:`ensure_service` started in this home (``serving/service.pid``),
    which would outlive ``make up``'s Airflow. Only if that pid is still a BentoML server (a
    stale pid may belong to anything now): ``bentoml serve``, which renames itself ``circusd``
    once its process arbiter runs."""
    pid_file = settings.serving_dir / "service.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (ValueError, OSError):
        pid_file.unlink(missing_ok=True)  # unreadable or the process is gone
        return False
    pid_file.unlink(missing_ok=True)
    if command != "circusd" and not ("bentoml" in command and "serve" in command):
        warn(f"{pid_file} named pid {pid}, which is not a BentoML server now ({command[:80]!r}): left alone")
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
        return True
    except (ProcessLookupError, PermissionError):
        return False
