"""Named crash points for fault-injection tests: where a real process is made to fail.

A crash between two steps (two alias moves, an alias move and the state write, a stage that
has switched the service but not finished) is the failure a rollout must survive. Tests set
``FRAUDFLOW_FAILPOINT=<name>`` (or ``<name>=raise``) for the process under test:

- ``<name>``: the process exits at once with status 137, as if killed by SIGKILL: no
  ``finally`` blocks, no cleanup, no Airflow teardown from that process;
- ``<name>=raise``: :class:`FailpointError` is raised there, as any bug or lost dependency
  would (the task fails; Airflow's retries and teardowns run).

Unset (always, outside tests), a failpoint costs one environment lookup.
"""

from __future__ import annotations

import os

ENV = "FRAUDFLOW_FAILPOINT"
KILLED = 137  # the exit status of a process killed by SIGKILL, as a shell reports it


class FailpointError(RuntimeError):
    """Raised at a failpoint set to ``raise``."""


def failpoint(name: str) -> None:
    """Fail here as the environment says (see the module docstring); nothing when unset."""
    setting = os.environ.get(ENV)
    if setting == name:
        os._exit(KILLED)
    if setting == f"{name}=raise":
        raise FailpointError(f"failpoint {name} (set by {ENV})")
