"""The scoring core behind the BentoML service, importable without BentoML.

Three pieces, each usable in-process (tests, batch jobs, notebooks) with the same results
as the HTTP service:

- ``Transaction`` / ``ScoreResponse``: the request and response models (pydantic).
- ``Scorer``: one registered model version (champion or challenger), its family's loader and
  its F1 threshold (version tag ``fraudflow.threshold``).
- ``FeatureLookup``: the 12 window features computed at the instant of each transaction from
  the card's and terminal's recent history in Feast's online store (``fraudflow.features.
  history``; the scored transaction is pushed into its card's history before the answer), plus
  the 3 request-time inputs from :func:`fraudflow.features.request_time_features`: the code
  training used for all 15.

Degraded mode: an entity the online store has no history for is scored on the request alone
and answered ``degraded=True`` (``unknown customer`` / ``unknown terminal``); for a card's
first transaction that is also the offline value. If the online store fails, every row is
scored on the request alone with the reason ``feature store unavailable: <error class>``, and
nothing is pushed (a partial history would overwrite the card's live entries); if only the
push fails, the answer is right but the reason ``history not recorded: <error class>`` says the
card's next transactions will not count this one until the daily batch. A lookup never raises.

The request-alone values: card counts 1 and average amounts the transaction's own amount,
terminal counts and risks 0.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
)

from fraudflow import tags
from fraudflow.features.compute import CUSTOMER_FEATURES, MODEL_INPUTS, TERMINAL_FEATURES, request_time_arrays
from fraudflow.settings import Settings, get_settings

DEFAULT_MODEL_URI = "models:/fraud-detector@champion"
MIN_YEAR, MAX_YEAR = 2000, 2100
ENTITY_FEATURES = CUSTOMER_FEATURES + TERMINAL_FEATURES
UNKNOWN_CUSTOMER, UNKNOWN_TERMINAL = "unknown customer", "unknown terminal"
REOPEN_SECONDS = 5.0  # how often a failed feature store is re-opened at most


# Ids: 64-bit non-negative integers or 1-64 printable ASCII characters without surrounding
# spaces (logged, echoed, shown to people: no NUL, control or bidirectional-override characters).
# The rule is the documented JSON-schema pattern itself, so the OpenAPI document and the
# validator cannot disagree (schemathesis checks both directions).
ID_PATTERN = r"^[!-~]([ -~]{0,62}[!-~])?$"
_Id = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] | Annotated[str, StringConstraints(pattern=ID_PATTERN)]
# tx_datetime's years as a pattern on the text, documented; the validator below enforces it.
YEAR_PATTERN = r"^(20[0-9]{2}|2100)-"


_CEILING_ENV = "FRAUDFLOW_AMOUNT_CEILING"


@functools.lru_cache(maxsize=8)
def _amount_ceiling(env_value: str | None) -> float:
    """The amount_ceiling setting, read when the first request is validated (never at import)
    and cached per value of its variable: building Settings costs ~3 ms, once per request it
    tripled the scoring service's CPU per request."""
    return get_settings().amount_ceiling


class Transaction(BaseModel):
    """One card transaction to score; ids may be integers or non-empty strings."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: _Id
    tx_datetime: dt.datetime = Field(
        description="ISO 8601, years 2000-2100. Naive times are UTC; aware times are converted to UTC.",
        json_schema_extra={"pattern": YEAR_PATTERN},
    )
    customer_id: _Id
    terminal_id: _Id
    # strict: a JSON number only (true or "12.5" is a client bug, not an amount)
    tx_amount: StrictFloat = Field(ge=0, allow_inf_nan=False, description="At most the amount_ceiling setting.")

    @field_validator("tx_amount")
    @classmethod
    def _below_ceiling(cls, value: float) -> float:
        ceiling = _amount_ceiling(os.environ.get(_CEILING_ENV))
        if value > ceiling:
            raise ValueError(f"tx_amount must be at most {ceiling:g} (amount_ceiling), got {value:g}")
        return value

    @field_validator("tx_datetime")
    @classmethod
    def _plausible_time(cls, value: dt.datetime) -> dt.datetime:
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise ValueError(f"tx_datetime must be between years {MIN_YEAR} and {MAX_YEAR}, got {value.year}")
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value


class ScoreResponse(BaseModel):
    transaction_id: int | str
    fraud_probability: float
    is_fraud: bool
    model_name: str
    model_version: str
    served_by: Literal["champion", "challenger"]
    request_id: str
    degraded: bool
    degraded_reason: str | None = None


PACKED_PREFIX = "bentoml:"  # a model from the BentoML store, e.g. bentoml:fraud-detector:v3
PACKED_MLFLOW_DIR = "mlflow_model"  # where bentoml.mlflow.import_model keeps the MLflow model


def _packed_model_path(name: str, version: str) -> str | None:
    """The MLflow model inside BentoML model ``<name>:v<version>``, if this process's BentoML
    store holds it (``BENTOML_HOME``: the home's store for fraudflow's services)."""
    if "BENTOML_HOME" not in os.environ:
        return None
    import bentoml

    try:
        return bentoml.models.get(f"{name}:v{version}").path_of(PACKED_MLFLOW_DIR)
    except bentoml.exceptions.NotFound:
        return None


_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class Scorer:
    """One registered model version, loaded once; ``predict`` returns fraud probabilities.

    ``model_uri`` is ``models:/<name>@<alias>`` or ``models:/<name>/<version>``. An alias is
    resolved to its version first and that version is loaded, so a concurrent alias move cannot
    make the loaded model and the reported version disagree.
    """

    def __init__(self, model_uri: str = DEFAULT_MODEL_URI, settings: Settings | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        settings = settings or get_settings()
        if model_uri.startswith(PACKED_PREFIX):
            self._init_packed(model_uri.removeprefix(PACKED_PREFIX))
            return
        match = _MODEL_URI.match(model_uri)
        if match is None:
            raise ValueError(f"model URI must be models:/<name>@<alias> or models:/<name>/<version>, got {model_uri!r}")
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        client = MlflowClient(settings.mlflow_tracking_uri)
        name = match["name"]
        if match["alias"]:
            mv = client.get_model_version_by_alias(name, match["alias"])
        else:
            mv = client.get_model_version(name, match["version"])
        self.model_uri = model_uri
        self.model_name, self.version = name, str(mv.version)
        self.tags = dict(mv.tags or {})
        # The weights come from the version's Bento model when deploy_model built one (the
        # artifact a Bento packs), else from the MLflow registry.
        packed = _packed_model_path(name, self.version)
        self._load(packed or f"models:/{name}/{self.version}")

    def _init_packed(self, tag: str) -> None:
        """The model a Bento packs (``bentoml:fraud-detector:v<N>``): weights, version and
        threshold from the BentoML model itself, no MLflow needed."""
        import bentoml

        model = bentoml.models.get(tag)
        self.model_uri = f"{PACKED_PREFIX}{model.tag}"
        self.model_name = model.info.labels.get("registry", str(model.tag.name))
        self.version = model.info.labels["model_version"]
        self.tags = {k: str(v) for k, v in (model.info.metadata or {}).items()}
        self._load(model.path_of(PACKED_MLFLOW_DIR))

    def _load(self, uri: str) -> None:
        from fraudflow.models.candidates import Calibrated, load_candidate_model, raw_model, single_threaded_boosters

        self.threshold = float(self.tags.get(tags.THRESHOLD, 0.5))
        self.spec, self.model = load_candidate_model(uri)
        self.calibration = self.model.calibration if isinstance(self.model, Calibrated) else None
        self._booster = None
        # A loaded XGBClassifier forgets n_jobs and starts every predict on all OpenMP threads:
        # 4.5 ms for one row on 2 cores against 1.0 ms single-threaded, and far worse in the tail
        # when the machine is busy. That holds for an ensemble's XGBoost member too.
        for booster in single_threaded_boosters(raw_model(self.model)):
            if self.spec.flavor == "xgboost" and list(booster.feature_names or MODEL_INPUTS) == MODEL_INPUTS:
                self._booster = booster

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Fraud probabilities (float64, one per row) for a frame of exactly ``MODEL_INPUTS``.

        XGBoost goes straight to ``Booster.inplace_predict`` on a float32 array (the same
        numbers as ``predict_proba``, without its ~0.8 ms of pandas conversion per call), then
        through the version's calibration when it carries one.
        """
        if self._booster is not None and list(features.columns) == MODEL_INPUTS:
            array = np.ascontiguousarray(features.to_numpy(dtype=np.float32))
            raw = self._booster.inplace_predict(array, validate_features=False).astype(np.float64)
            return self.calibration.apply(raw) if self.calibration is not None else raw
        return self.spec.predict_proba(self.model, features)


class FeatureLookup:
    """Model inputs for transactions: Feast online features + request-time features."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.store: Any = None
        self.refs: list[str] = []
        self.error: str | None = None
        self._opened_at = 0.0
        self._open()

    def _open(self) -> None:
        """Open the store and check that it knows the history views (loads the registry)."""
        from fraudflow.features.history import OnlineHistories
        from fraudflow.features.store import open_store

        self._opened_at = time.monotonic()
        try:
            histories = OnlineHistories(open_store(self.settings))
        except Exception as exc:  # reported as degraded, never raised
            self.store, self.error = None, f"feature store unavailable: {type(exc).__name__}"
            return
        self.store, self.error = histories, None

    @property
    def ready(self) -> bool:
        return self.store is not None

    def probe(self) -> bool:
        """True when the online store answers a read (used by health checks)."""
        return self._online(["-"], ["-"]) is not None

    def _online(self, customers: list[str], terminals: list[str]) -> dict[str, list] | None:
        if self.store is None and time.monotonic() - self._opened_at >= REOPEN_SECONDS:
            self._open()
        if self.store is None:
            return None
        try:
            return self.store.read(customers, terminals)
        except Exception as exc:  # reported as degraded, never raised
            self.error = f"feature store unavailable: {type(exc).__name__}"
            return None

    def lookup(self, transactions: Sequence[Transaction]) -> tuple[pd.DataFrame, np.ndarray, list[str | None]]:
        """``(X, degraded, reasons)``: X holds ``MODEL_INPUTS`` in order, one row per transaction.

        The transactions enter their cards' histories (pushed) before this returns.
        """
        from fraudflow.features.history import served_windows

        n = len(transactions)
        amounts = np.fromiter((t.tx_amount for t in transactions), dtype=np.float64, count=n)
        when = np.array([np.datetime64(t.tx_datetime.replace(tzinfo=None), "us") for t in transactions])
        columns: dict[str, np.ndarray] = request_time_arrays(amounts, when)
        customers = [str(t.customer_id) for t in transactions]
        terminals = [str(t.terminal_id) for t in transactions]
        data = self._online(customers, terminals)
        ids = [str(t.transaction_id) for t in transactions]
        windows = served_windows(data, ids, customers, terminals, when, amounts)
        for f in ENTITY_FEATURES:
            columns[f] = np.asarray(windows.features[f], dtype=np.float64)
        # One float block (a dict of 15 columns costs ~0.35 ms of pandas per request).
        features = pd.DataFrame(
            np.column_stack([columns[c] for c in MODEL_INPUTS]).astype(np.float64), columns=MODEL_INPUTS
        )
        unknown_customer = ~np.asarray(windows.known_customer)
        unknown_terminal = ~np.asarray(windows.known_terminal)
        if data is None:
            return features, np.ones(n, dtype=bool), [self.error] * n
        push_error = None
        if windows.live_rows:
            try:
                self.store.write_live(windows.live_rows)
            except Exception as exc:  # the answer is still right; later ones miss this transaction
                push_error = f"history not recorded: {type(exc).__name__}"
        degraded = unknown_customer | unknown_terminal | (push_error is not None)
        reasons: list[str | None] = [None] * n
        for i in np.flatnonzero(degraded):
            parts = [UNKNOWN_CUSTOMER] * bool(unknown_customer[i]) + [UNKNOWN_TERMINAL] * bool(unknown_terminal[i])
            reasons[i] = "; ".join(parts + [push_error] * (push_error is not None))
        return features, degraded, reasons
