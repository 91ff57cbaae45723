"""Paths, and the environment a benchmark's fraudflow home runs in."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's executables (mlflow, bentoml)


def use_home(home: str | Path | None = None, *, prefix: str = "fraudflow-bench-") -> Path:
    """Point ``FRAUDFLOW_HOME`` at ``home`` (default: a new temp dir named ``prefix``...), turn
    off GX analytics and MLflow telemetry unless set, and put the repository on ``sys.path``
    (``tests.helpers`` builds homes). Call before importing fraudflow's settings."""
    path = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["FRAUDFLOW_HOME"] = str(path)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return path
