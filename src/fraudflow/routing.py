"""Champion/challenger routing inside one scoring process, following the deployment state.

``RoutedScoring`` keeps a champion (and, during a rollout, a challenger) ``Scorer`` in step
with ``serving/deployment.json``: at most one ``stat`` per ``check_seconds`` per request
path; a changed file is loaded on a background thread and swapped in under a lock only once
every model it names is loaded, so requests never wait for a load or see a half-switched
pair. In shadow mode the challenger scores off the response path (a one-thread executor), so
a slow challenger cannot slow the answers. Every answer goes to the prediction log.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from fraudflow.deployment import DeploymentState, read_state, routes_to_challenger, state_path
from fraudflow.features import MODEL_INPUTS
from fraudflow.prediction_log import PredictionLog
from fraudflow.registry import MODEL_NAME
from fraudflow.serving import DEFAULT_MODEL_URI, FeatureLookup, Scorer, ScoreResponse, Transaction
from fraudflow.settings import Settings

log = logging.getLogger(__name__)


class RoutedScoring:
    def __init__(
        self,
        settings: Settings,
        *,
        default_model_uri: str = DEFAULT_MODEL_URI,
        check_seconds: float = 0.25,
        flush_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.path = state_path(settings)
        self.check_seconds = check_seconds
        self.features = FeatureLookup(settings)
        flush_seconds = flush_seconds or settings.prediction_flush_seconds
        self.log = PredictionLog(settings.predictions_dir, flush_seconds=flush_seconds)
        self.log.start_background_flush()
        self._shadow = ThreadPoolExecutor(1, thread_name_prefix="shadow")
        self._lock = threading.Lock()
        self._loading = False
        self._checked = 0.0
        self._mtime = self._stat()
        self.state = read_state(settings)
        uri = f"models:/{MODEL_NAME}/{self.state.champion}" if self.state.champion else default_model_uri
        self.champion: Scorer = Scorer(uri, settings)
        self.challenger: Scorer | None = self._scorer(self.state.challenger)
        self.load_error: str | None = None
        # Follow the state file without traffic too: a quiet service must still switch (the
        # controller waits for /healthz to report the new revision before replaying traffic).
        self._stop_following = threading.Event()
        self._follower = threading.Thread(target=self._follow, daemon=True, name="deployment-follow")
        self._follower.start()

    def _follow(self) -> None:
        while not self._stop_following.wait(self.check_seconds):
            self.refresh()

    # -- following the state file -----------------------------------------------------------
    def _stat(self) -> int | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None

    def _scorer(self, version: str | None, reuse: tuple[Scorer | None, ...] = ()) -> Scorer | None:
        if version is None:
            return None
        for scorer in reuse:
            if scorer is not None and scorer.version == str(version):
                return scorer
        return Scorer(f"models:/{MODEL_NAME}/{version}", self.settings)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.check_seconds or self._loading:
            return
        self._checked = now
        mtime = self._stat()
        if mtime is None or mtime == self._mtime:
            return
        self._loading = True
        threading.Thread(target=self._load, args=(mtime,), daemon=True, name="deployment-load").start()

    def _load(self, mtime: int) -> None:
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
        deadline = time.monotonic() + timeout
        while self._loading and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- scoring ----------------------------------------------------------------------------
    @staticmethod
    def _challenger_scores(scorer: Scorer, features: pd.DataFrame, state: DeploymentState) -> np.ndarray:
        if state.challenger_delay_ms:
            time.sleep(state.challenger_delay_ms / 1000)  # drill: a slow challenger
        scores = scorer.predict(features)
        return np.clip(scores + state.challenger_score_shift, 0, 1) if state.challenger_score_shift else scores

    def score(self, transactions: list[Transaction], endpoint: str) -> list[ScoreResponse]:
        started = time.perf_counter()
        self.refresh()
        with self._lock:
            state, champion, challenger = self.state, self.champion, self.challenger
        features, degraded, reasons = self.features.lookup(transactions)
        n = len(transactions)
        served_by = np.array(["champion"] * n, dtype=object)
        scores = np.empty(n)
        champion_scores = np.full(n, np.nan)
        challenger_scores = np.full(n, np.nan)
        champion_ms = challenger_ms = 0.0
        errors: list[str | None] = [None] * n
        to_challenger = np.zeros(n, dtype=bool)
        if state.mode == "canary" and challenger is not None:
            to_challenger = np.array(
                [routes_to_challenger(str(t.customer_id), state.canary_share) for t in transactions]
            )
        if (~to_challenger).any():
            t0 = time.perf_counter()
            champion_scores[~to_challenger] = champion.predict(features[~to_challenger])
            champion_ms = (time.perf_counter() - t0) * 1000
            scores[~to_challenger] = champion_scores[~to_challenger]
        if to_challenger.any():
            t0 = time.perf_counter()
            try:
                challenger_scores[to_challenger] = self._challenger_scores(challenger, features[to_challenger], state)
                scores[to_challenger] = challenger_scores[to_challenger]
                served_by[to_challenger] = "challenger"
            except Exception as exc:  # a broken challenger: the champion answers instead
                scores[to_challenger] = champion.predict(features[to_challenger])
                for i in np.flatnonzero(to_challenger):
                    errors[i] = f"{type(exc).__name__}: {exc}"
            challenger_ms = (time.perf_counter() - t0) * 1000
        request_id = uuid.uuid4().hex
        thresholds = {"champion": champion.threshold, "challenger": challenger.threshold if challenger else 0.5}
        versions = {"champion": champion.version, "challenger": challenger.version if challenger else None}
        responses = [
            ScoreResponse.model_construct(
                transaction_id=t.transaction_id,
                fraud_probability=float(scores[i]),
                is_fraud=bool(scores[i] >= thresholds[served_by[i]]),
                model_name=champion.model_name,
                model_version=versions[served_by[i]],
                served_by=served_by[i],
                request_id=request_id,
                degraded=bool(degraded[i]),
                degraded_reason=reasons[i],
            )
            for i, t in enumerate(transactions)
        ]
        latency_ms = (time.perf_counter() - started) * 1000
        records = [
            {
                "request_id": request_id,
                "logged_at": dt.datetime.now(dt.UTC),
                "endpoint": endpoint,
                "transaction_id": str(t.transaction_id),
                "tx_datetime": t.tx_datetime,
                "customer_id": str(t.customer_id),
                "terminal_id": str(t.terminal_id),
                "tx_amount": t.tx_amount,
                "features": dict(zip(MODEL_INPUTS, row, strict=True)),
                "served_by": served_by[i],
                "model_version": versions[served_by[i]],
                "score": float(scores[i]),
                "is_fraud": responses[i].is_fraud,
                "champion_version": champion.version,
                "champion_score": None if np.isnan(champion_scores[i]) else float(champion_scores[i]),
                "challenger_version": versions["challenger"],
                "challenger_score": None if np.isnan(challenger_scores[i]) else float(challenger_scores[i]),
                "challenger_error": errors[i],
                "champion_latency_ms": champion_ms,
                "challenger_latency_ms": challenger_ms if to_challenger[i] else None,
                "latency_ms": latency_ms,
                "degraded": bool(degraded[i]),
                "degraded_reason": reasons[i],
            }
            for i, (t, row) in enumerate(zip(transactions, features.to_numpy().tolist(), strict=True))
        ]
        if state.mode == "shadow" and challenger is not None:
            self._shadow.submit(self._shadow_score, challenger, state, features, records)
        else:
            for record in records:
                self.log.append(record)
        return responses

    def _shadow_score(self, challenger: Scorer, state: DeploymentState, features: pd.DataFrame, records) -> None:
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
        return {
            "model_version": self.champion.version,
            "challenger_version": self.challenger.version if self.challenger else None,
            "mode": self.state.mode,
            "deployment_revision": self.state.revision,
            "deployment_error": self.load_error,
        }

    def close(self) -> None:
        """Finish shadow work and flush the log (called on shutdown: nothing is lost)."""
        self._stop_following.set()
        self._shadow.shutdown(wait=True)
        self.log.close()
