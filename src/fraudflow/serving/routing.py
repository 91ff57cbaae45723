"""Champion/challenger routing inside one scoring process, following the deployment state.

``RoutedScoring`` keeps a champion (and, during a rollout, a challenger) ``Scorer`` in step
with ``serving/deployment.json``: at most one ``stat`` per ``check_seconds`` per request
path; a changed file is loaded on a background thread and swapped in under a lock only once
every model it names is loaded, so requests never wait for a load or see a half-switched
pair. In shadow mode the challenger scores off the response path (a one-thread executor), so
a slow challenger cannot slow the answers. Every answer goes to the prediction log.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from fraudflow.registry import MODEL_NAME
from fraudflow.serving.answer import Answer, log_records, responses
from fraudflow.serving.prediction_log import PredictionLog
from fraudflow.serving.scoring import DEFAULT_MODEL_URI, FeatureLookup, Scorer, ScoreResponse, Transaction
from fraudflow.serving.state import DeploymentState, read_state, routes_to_challenger, state_path
from fraudflow.settings import Settings

log = logging.getLogger(__name__)


class RoutedScoring:
    """The scoring process's deployed model pair, kept in step with the deployment state file."""

    def __init__(
        self,
        settings: Settings,
        *,
        default_model_uri: str = DEFAULT_MODEL_URI,
        check_seconds: float = 0.25,
        flush_seconds: float | None = None,
        pinned_model_uri: str | None = None,
    ) -> None:
        """``pinned_model_uri`` serves that one model and ignores the deployment state (a Bento
        run on its own serves the model it packs); otherwise the state's pair is served and
        ``default_model_uri`` only while no state exists."""
        self.settings = settings
        self.pinned = pinned_model_uri is not None
        self.path = state_path(settings)
        self.check_seconds = check_seconds
        self.features = FeatureLookup(settings)
        flush_seconds = flush_seconds or settings.prediction_flush_seconds
        self.log = PredictionLog(settings.predictions_dir, flush_seconds=flush_seconds)
        self.log.start_background_flush()
        self._shadow = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self._shadow_pending = threading.BoundedSemaphore(settings.shadow_queue_max)
        self.shadow_dropped = 0  # transactions logged without a shadow score (queue full)
        self._challenger_calls = itertools.count(1)  # for the challenger_fail_every drill
        self._lock = threading.Lock()
        self._loading = False
        self._checked = 0.0
        self._mtime = self._stat()
        self.state = DeploymentState(reason="pinned model") if self.pinned else read_state(settings)
        uri = f"models:/{MODEL_NAME}/{self.state.champion}" if self.state.champion else default_model_uri
        self.champion: Scorer = Scorer(pinned_model_uri or uri, settings)
        self.challenger: Scorer | None = self._scorer(self.state.challenger)
        self.load_error: str | None = None
        # Follow the state file without traffic too: a quiet service must still switch (the
        # controller waits for /healthz to report the new revision before replaying traffic).
        self._stop_following = threading.Event()
        self._follower = threading.Thread(target=self._follow, daemon=True, name="deployment-follow")
        self._follower.start()

    def _follow(self) -> None:
        """The follower thread: refresh every ``check_seconds`` until :meth:`close`."""
        while not self._stop_following.wait(self.check_seconds):
            self.refresh()

    # -- following the state file -----------------------------------------------------------
    def _stat(self) -> int | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None

    def _scorer(self, version: str | None, reuse: tuple[Scorer | None, ...] = ()) -> Scorer | None:
        """A scorer for registered ``version``, reusing one of ``reuse`` already loaded; None without one."""
        if version is None:
            return None
        for scorer in reuse:
            if scorer is not None and scorer.version == str(version):
                return scorer
        return Scorer(f"models:/{MODEL_NAME}/{version}", self.settings)

    def refresh(self) -> None:
        """At most once per ``check_seconds``: if the state file changed, load it on a background
        thread; requests keep the current pair meanwhile."""
        now = time.monotonic()
        if self.pinned or now - self._checked < self.check_seconds or self._loading:
            return
        self._checked = now
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return
        self._loading = True
        threading.Thread(target=self._load, args=(mtime,), daemon=True, name="deployment-load").start()

    def _load(self, mtime: int) -> None:
        """Load every model the state names, then swap the pair in under the lock; on failure keep
        the last good pair and report the error in :meth:`health`."""
        try:
            state = read_state(self.settings)
            known = (self.champion, self.challenger)
            champion = self._scorer(state.champion, known) or self.champion
            challenger = self._scorer(state.challenger, (*known, champion))
            with self._lock:
                self.state, self.champion, self.challenger = state, champion, challenger
                self._mtime, self.load_error = mtime, None
            self.log.flush()
            log.info(
                "deployment revision %s: %s, champion v%s, challenger %s",
                state.revision,
                state.mode,
                champion.version,
                challenger.version if challenger else "-",
            )
        except Exception as exc:  # keep serving the last good pair; retry on the next change
            self.load_error = f"{type(exc).__name__}: {exc}"
            self._mtime = mtime
            log.exception("could not apply deployment state %s", self.path)
        finally:
            self._loading = False

    def wait_until_loaded(self, timeout: float = 60) -> None:
        """Block until a background load has finished, or ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        while self._loading and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- scoring ----------------------------------------------------------------------------
    def _challenger_scores(self, scorer: Scorer, features: pd.DataFrame, state: DeploymentState) -> np.ndarray:
        """The challenger's scores, with the state's drill knobs applied (a delay, a score
        shift, every n-th call failing)."""
        if state.challenger_fail_every and next(self._challenger_calls) % state.challenger_fail_every == 0:
            raise RuntimeError(f"drill: every {state.challenger_fail_every}th challenger call fails")
        if state.challenger_delay_ms:
            time.sleep(state.challenger_delay_ms / 1000)  # drill: a slow challenger
        scores = scorer.predict(features)
        return np.clip(scores + state.challenger_score_shift, 0, 1) if state.challenger_score_shift else scores

    def score(self, transactions: list[Transaction], endpoint: str) -> list[ScoreResponse]:
        """Score one request with the deployed pair, answer, and log every transaction.

        The champion answers unless the state is a canary and the card routes to the challenger;
        a failing challenger is covered by the champion (the error is logged). In shadow mode the
        challenger scores after the answer, off the response path, and the log rows wait for it.

        Args:
            transactions: The request's transactions, in order.
            endpoint: The path that received them (``/score`` or ``/score_batch``), for the log.

        Returns:
            One response per transaction, in the same order, sharing one ``request_id``.
        """
        started = time.perf_counter()
        self.refresh()
        with self._lock:
            state, champion, challenger = self.state, self.champion, self.challenger
        features, degraded, reasons = self.features.lookup(transactions)
        answer = Answer(self._route(transactions, state, challenger))
        answer.champion_ms = self._score_champion(answer, champion, features)
        if challenger is not None and answer.to_challenger.any():
            answer.challenger_ms = self._score_challenger(answer, champion, challenger, features, state)
        request_id = uuid.uuid4().hex
        versions = {"champion": champion.version, "challenger": challenger.version if challenger else None}
        answers = responses(transactions, answer, request_id, champion, challenger, versions, degraded, reasons)
        latency_ms = (time.perf_counter() - started) * 1000
        records = log_records(
            transactions, features, answer, answers, request_id, endpoint, versions, latency_ms, degraded, reasons
        )
        self._log(records, features, state, challenger)
        return answers

    @staticmethod
    def _route(transactions: list[Transaction], state: DeploymentState, challenger: Scorer | None) -> np.ndarray:
        """Which transactions the challenger answers: in a canary, those whose card hashes into
        ``canary_share`` (a card always lands on the same side); otherwise none."""
        if state.mode == "canary" and challenger is not None:
            return np.array([routes_to_challenger(str(t.customer_id), state.canary_share) for t in transactions])
        return np.zeros(len(transactions), dtype=bool)

    @staticmethod
    def _score_champion(answer: Answer, champion: Scorer, features: pd.DataFrame) -> float:
        """Score the champion's rows into ``answer``; the milliseconds the model took (0 if none)."""
        rows = answer.to_champion
        if not rows.any():
            return 0.0
        t0 = time.perf_counter()
        answer.champion_scores[rows] = champion.predict(features[rows])
        elapsed_ms = (time.perf_counter() - t0) * 1000
        answer.scores[rows] = answer.champion_scores[rows]
        return elapsed_ms

    def _score_challenger(
        self, answer: Answer, champion: Scorer, challenger: Scorer, features: pd.DataFrame, state: DeploymentState
    ) -> float:
        """Score the canary rows with the challenger into ``answer``; if it raises, the champion
        answers them and the error is kept for the log. The milliseconds spent, fallback included."""
        rows = answer.to_challenger
        t0 = time.perf_counter()
        try:
            answer.challenger_scores[rows] = self._challenger_scores(challenger, features[rows], state)
            answer.scores[rows] = answer.challenger_scores[rows]
            answer.served_by[rows] = "challenger"
        except Exception as exc:  # a broken challenger: the champion answers instead
            answer.scores[rows] = champion.predict(features[rows])
            error = f"{type(exc).__name__}: {exc}"
            for i in np.flatnonzero(rows):
                answer.errors[i] = error
        return (time.perf_counter() - t0) * 1000

    def _log(
        self, records: list[dict[str, Any]], features: pd.DataFrame, state: DeploymentState, challenger: Scorer | None
    ) -> None:
        """Append the rows now or, in shadow mode, once the challenger has scored them too."""
        if state.mode == "shadow" and challenger is not None:
            if self._shadow_pending.acquire(blocking=False):
                self._shadow.submit(self._shadow_score, challenger, state, features, records)
                return
            # A challenger slower than the traffic: log the answer without its shadow score
            # rather than queue without bound (memory) or wait (latency).
            self.shadow_dropped += len(records)
            for record in records:
                record["challenger_error"] = "shadow queue full: challenger not scored"
        for record in records:
            self.log.append(record)

    def _shadow_score(
        self, challenger: Scorer, state: DeploymentState, features: pd.DataFrame, records: list[dict[str, Any]]
    ) -> None:
        """On the shadow thread: score every row with the challenger, add its score, decision,
        error and latency to the log rows, and append them."""
        try:
            self._shadow_rows(challenger, state, features, records)
        finally:
            self._shadow_pending.release()

    def _shadow_rows(
        self, challenger: Scorer, state: DeploymentState, features: pd.DataFrame, records: list[dict[str, Any]]
    ) -> None:
        t0 = time.perf_counter()
        error, shadow = None, None
        try:
            shadow = self._challenger_scores(challenger, features, state)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed = (time.perf_counter() - t0) * 1000
        for i, record in enumerate(records):
            score = None if shadow is None else float(shadow[i])
            record.update(
                challenger_score=score,
                challenger_error=error,
                challenger_latency_ms=elapsed,
                challenger_is_fraud=None if score is None else score >= challenger.threshold,
            )
            self.log.append(record)

    def health(self) -> dict[str, Any]:
        """The deployment part of ``/healthz``: served versions, mode, revision, last load error."""
        return {
            "model_version": self.champion.version,
            "challenger_version": self.challenger.version if self.challenger else None,
            "mode": self.state.mode,
            "deployment_revision": self.state.revision,
            "deployment_error": self.load_error,
            "shadow_dropped": self.shadow_dropped,
        }

    def close(self) -> None:
        """Finish shadow work and flush the log (called on shutdown: nothing is lost)."""
        self._stop_following.set()
        self._shadow.shutdown(wait=True)
        self.log.close()
