"""Turn data errors into Airflow failures that skip retries, with the stage's own message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow.sdk.exceptions import AirflowFailException


@contextmanager
def fail_without_retry(*data_errors: type[BaseException]) -> Iterator[None]:
    """Re-raise ``data_errors`` as AirflowFailException: bad bytes do not heal on retry, so
    retrying would only delay the alert. Other errors (a full disk, a lost connection)
    keep the task's retries."""
    try:
        yield
    except data_errors as exc:
        raise AirflowFailException(str(exc)) from exc
