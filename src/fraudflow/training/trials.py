"""Selection trials fitted side by side: each trial (one parameter set over every fold) in its
own worker process, so a search uses both cores even when ``dag.test()`` runs the families one
after the other (``make demo``, ``fraudflow run``).

Every fit is single-threaded and seeded (XGBoost ``n_jobs=1``, the MLP's ``threads=1``), so a
trial scores the same in a worker as in the calling process (tested). Workers are spawned, not
forked: the caller may hold torch and OpenMP state that a fork would copy half-initialised, and
they read the folds from the parquet files the search already wrote, so nothing large is pickled.
This module imports only what a fit needs, which keeps a worker's start-up short. Inside a
daemonic process (a Celery prefork worker) no child may be started, so the trials run in process.

Workers do not re-run the caller's ``__main__`` (see :func:`_main_module_hidden`): inside an
Airflow task it is the ``airflow`` CLI, whose import in a worker died on the task's
deliberately unusable metadata-DB URL (``BrokenProcessPool`` under the LocalExecutor; the
scheduler-driven test runs the search there).
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from fraudflow.features.compute import LABEL, MODEL_INPUTS

log = logging.getLogger(__name__)


def fold_scores(candidate: str, params: dict[str, Any], fold_paths: list[tuple[str, str]]) -> list[np.ndarray]:
    """Fit ``candidate`` with ``params`` on each fold's training rows; its validation scores."""
    from fraudflow.models.candidates import CANDIDATES

    spec = CANDIDATES[candidate]
    scores = []
    for train_path, valid_path in fold_paths:
        train, valid = pd.read_parquet(train_path), pd.read_parquet(valid_path)
        model = spec.fit(train[MODEL_INPUTS], train[LABEL].to_numpy(), params)
        scores.append(spec.predict_proba(model, valid[MODEL_INPUTS]))
    return scores


def run_trials(
    candidate: str, grid: list[dict[str, Any]], fold_paths: list[tuple[str, str]], *, workers: int
) -> list[list[np.ndarray]]:
    """Every trial's validation scores per fold, in ``grid`` order; ``workers`` > 1 fits trials
    in that many spawned processes."""
    if multiprocessing.current_process().daemon and workers > 1:
        # A Celery prefork worker (the production executor) runs tasks in daemonic processes,
        # which may not start children; there the trials run one after the other.
        log.info("selection trials in process: this task runs in a daemonic process (Celery prefork)")
        workers = 1
    if workers <= 1 or len(grid) <= 1:
        return [fold_scores(candidate, params, fold_paths) for params in grid]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(grid)), mp_context=context) as pool:
        with _main_module_hidden():  # the workers start on the first submit
            futures = [pool.submit(fold_scores, candidate, params, fold_paths) for params in grid]
        return [future.result() for future in futures]


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start spawned workers without the caller's ``__main__``.

    A spawned child re-imports the parent's main module (by ``__spec__`` name or ``__file__``
    path) before it unpickles anything. The trials need nothing from it, and the caller's main
    may not be importable elsewhere: in an Airflow task it is the ``airflow`` script. With
    neither attribute set, multiprocessing skips that step.
    """
    main = sys.modules["__main__"]
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)
