"""One interface over the candidate model families, for training, the gates and serving.

The training stage fits every family the same way (``CANDIDATES[name].fit(X, y, params)``),
the evaluation gate scores them the same way (``predict_proba``), and serving loads any
registered version without knowing its family (``load_candidate_model``): the family is
read from the MLmodel file's flavours and the flavour's own loader is used. That matters
because the generic pyfunc flavour of an XGBClassifier returns class labels, not
probabilities. The MLP is logged with fraudflow's own weights-only flavour
(``models/mlp_flavor.py``); a version logged as a pickled torch module is refused unopened.

Inputs are strict: a frame must hold exactly ``MODEL_INPUTS`` in that order. A silently
reordered or renamed column would still produce plausible-looking scores, so mismatches are
errors that name the offending columns. Inputs are cast to float32, the dtype the logged
signatures declare.

The families' modules (xgboost, torch) are imported on first use, so a process that only
serves one family does not pay for importing the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fraudflow.features.compute import MODEL_INPUTS
from fraudflow.models.calibration import METADATA_KEY, Calibration

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

EXAMPLE_ROWS = 5  # rows of the input example stored with a logged model


@dataclass(frozen=True)
class Calibrated:
    """A fitted model and the calibration of its scores (``models/calibration.py``): what
    ``predict_proba`` answers with, what ``log_model`` logs (the calibration as MLmodel
    metadata) and what ``load_candidate_model`` returns when a version carries one."""

    model: Any
    calibration: Calibration


def raw_model(model: Any) -> Any:
    """The family's own model object, with or without its calibration."""
    return model.model if isinstance(model, Calibrated) else model


def single_threaded_boosters(model: Any) -> list[Any]:
    """Pin every XGBoost model inside ``model`` (itself, or an ensemble's members) to one thread
    for serving, and return their boosters. A loaded XGBClassifier predicts on all OpenMP
    threads, which on a busy 2-core machine costs a request far more than it saves."""
    members = model.members.values() if hasattr(model, "members") else [model]
    boosters = []
    for member in members:
        if hasattr(member, "get_booster"):
            member.set_params(n_jobs=1)
            booster = member.get_booster()
            booster.set_param({"nthread": 1})
            boosters.append(booster)
    return boosters


def input_frame(X: pd.DataFrame) -> pd.DataFrame:
    """``X`` as a float32 copy, after checking its columns are exactly ``MODEL_INPUTS`` in order.

    Raises:
        TypeError: ``X`` is not a DataFrame.
        ValueError: columns are missing, unexpected, duplicated or out of order (the message
            names them).
    """
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"model inputs must be a pandas DataFrame, got {type(X).__name__}")
    columns = list(X.columns)
    if columns != MODEL_INPUTS:
        problems = []
        if missing := [c for c in MODEL_INPUTS if c not in columns]:
            problems.append(f"missing columns {missing}")
        if unexpected := [c for c in columns if c not in MODEL_INPUTS]:
            problems.append(f"unexpected columns {unexpected}")
        if duplicated := sorted({c for c in columns if columns.count(c) > 1}, key=str):
            problems.append(f"duplicated columns {duplicated}")
        if not problems:
            problems.append("columns out of order")
        raise ValueError(
            f"model inputs must be exactly MODEL_INPUTS in order (select X[MODEL_INPUTS]): {'; '.join(problems)}"
        )
    return X.astype(np.float32)


def check_labels(y: np.ndarray, n_rows: int) -> np.ndarray:
    """``y`` as a 1-D int8 array of 0/1, checked against the number of input rows.

    Raises:
        ValueError: wrong length or shape, values other than 0/1, or only one class present.
    """
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != n_rows:
        raise ValueError(f"labels must be 1-D with one value per input row ({n_rows}), got shape {labels.shape}")
    values = set(np.unique(labels).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got values {sorted(values, key=str)[:10]}")
    if len(values) < 2:
        raise ValueError(f"labels hold only class {values.pop() if values else 'none'}: a classifier needs both")
    return labels.astype(np.int8)


class CandidateSpec(ABC):
    """A model family: how to fit, score, log to MLflow and load back one of its models."""

    name: ClassVar[str]
    flavor: ClassVar[str]  # the MLflow flavour its models are logged with

    @property
    @abstractmethod
    def params_model(self) -> type[BaseModel]:
        """The pydantic model of this family's hyper-parameters."""

    @abstractmethod
    def _fit(self, X: pd.DataFrame, y: np.ndarray, params: Any) -> Any: ...

    @abstractmethod
    def _predict(self, model: Any, X: pd.DataFrame) -> np.ndarray: ...

    @abstractmethod
    def _log(self, model: Any, **kwargs: Any) -> ModelInfo: ...

    @abstractmethod
    def load_model(self, model_uri: str) -> Any:
        """Load a model of this family with its MLflow flavour's loader (probabilities, not labels)."""

    def validate_params(self, params: Mapping[str, Any] | None = None) -> BaseModel:
        """The family's params from a plain dict; missing keys take the defaults.

        Raises:
            pydantic.ValidationError: an unknown key or an invalid value (a ValueError).
        """
        return self.params_model.model_validate(dict(params or {}))

    def fit(self, X: pd.DataFrame, y: np.ndarray, params: Mapping[str, Any] | None = None) -> Any:
        """Fit a model of this family.

        Args:
            X: Exactly the columns ``MODEL_INPUTS``, in that order.
            y: Binary labels (0/1), one per row of ``X``, both classes present.
            params: Hyper-parameters by name (see the family's params model); unknown keys
                are an error.

        Raises:
            ValueError: bad columns, labels or params (pydantic's ValidationError included).
        """
        return self._fit(X, y, self.validate_params(params))

    def predict_proba(self, model: Any, X: pd.DataFrame) -> np.ndarray:
        """Fraud probabilities, float64 of shape (n,), for a fitted or loaded model.

        Raises:
            ValueError: ``X`` does not hold exactly ``MODEL_INPUTS`` in order (names them).
        """
        scores = np.asarray(self._predict(raw_model(model), X), dtype=np.float64)
        if scores.shape != (len(X),):
            raise RuntimeError(f"{self.name} returned scores of shape {scores.shape}, expected ({len(X)},)")
        return model.calibration.apply(scores) if isinstance(model, Calibrated) else scores

    def log_model(self, model: Any, *, name: str = "model", input_example: pd.DataFrame) -> ModelInfo:
        """Log ``model`` with this family's MLflow flavour into the active run.

        The signature is inferred from float32 inputs and the probability outputs; the first
        rows of ``input_example`` are stored as the model's input example.

        Args:
            model: A model returned by ``fit`` (or ``load_model``).
            name: The logged model's name within the run.
            input_example: Rows with exactly ``MODEL_INPUTS`` (a few suffice).

        Returns:
            MLflow's ModelInfo; ``model_uri`` loads it back via ``load_candidate_model``.

        Raises:
            RuntimeError: no MLflow run is active.
        """
        import mlflow
        from mlflow.models import infer_signature

        if mlflow.active_run() is None:
            raise RuntimeError("log_model must be called inside an active MLflow run (mlflow.start_run())")
        example = input_frame(input_example).head(EXAMPLE_ROWS)
        signature = infer_signature(example, self.predict_proba(model, example))
        extra = {"metadata": {METADATA_KEY: model.calibration.model_dump()}} if isinstance(model, Calibrated) else {}
        return self._log(raw_model(model), name=name, signature=signature, input_example=example, **extra)


def xgboost_requirements() -> list[str]:
    """Pinned pip requirements of a logged XGBoost model, naming the distribution installed.

    MLflow's defaults pin ``xgboost==<module version>`` even when the module comes from the
    ``xgboost-cpu`` distribution, next to an inferred ``xgboost-cpu``: both would be
    installed into a serving environment (and ``xgboost`` drags in ~470 MB of nvidia-nccl).
    Listing them here also skips MLflow's requirement-inference subprocess.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        booster = f"xgboost-cpu=={version('xgboost-cpu')}"
    except PackageNotFoundError:
        booster = f"xgboost=={version('xgboost')}"
    return [booster] + [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "scipy", "numpy", "pandas")]


class XGBoostCandidate(CandidateSpec):
    name = "xgboost"
    flavor = "xgboost"

    @property
    def params_model(self) -> type[BaseModel]:
        from fraudflow.models.xgboost_candidate import XGBoostParams

        return XGBoostParams

    def _fit(self, X, y, params):
        from fraudflow.models.xgboost_candidate import fit_xgboost

        return fit_xgboost(X, y, params)

    def _predict(self, model, X):
        from fraudflow.models.xgboost_candidate import predict_xgboost

        return predict_xgboost(model, X)

    def _log(self, model, **kwargs):
        import mlflow.xgboost

        return mlflow.xgboost.log_model(model, pip_requirements=xgboost_requirements(), **kwargs)

    def load_model(self, model_uri: str):
        """The XGBClassifier itself (the pyfunc flavour would return class labels)."""
        import mlflow.xgboost

        return mlflow.xgboost.load_model(model_uri)


class MLPCandidate(CandidateSpec):
    name = "mlp"
    flavor = "fraudflow_mlp"

    @property
    def params_model(self) -> type[BaseModel]:
        from fraudflow.models.mlp import MLPParams

        return MLPParams

    def _fit(self, X, y, params):
        from fraudflow.models.mlp import fit_mlp

        return fit_mlp(X, y, params)

    def _predict(self, model, X):
        from fraudflow.models.mlp import predict_mlp

        return predict_mlp(model, X)

    def _log(self, model, **kwargs):
        from fraudflow.models.mlp_flavor import log_model

        return log_model(model, **kwargs)

    def load_model(self, model_uri: str):
        """The FraudMLP in eval mode: fraudflow's class, weights loaded with weights_only=True."""
        from fraudflow.models.mlp_flavor import load_model

        return load_model(model_uri)


class EnsembleCandidate(CandidateSpec):
    """The mean of the base families' probabilities (``models/ensemble.py``); trained only when
    prequential validation says it beats each family alone."""

    name = "ensemble"
    flavor = "fraudflow_ensemble"

    @property
    def params_model(self) -> type[BaseModel]:
        from fraudflow.models.ensemble import EnsembleParams

        return EnsembleParams

    def _fit(self, X, y, params):
        from fraudflow.models.ensemble import fit_ensemble

        return fit_ensemble(X, y, params)

    def _predict(self, model, X):
        from fraudflow.models.ensemble import predict_ensemble

        return predict_ensemble(model, X)

    def _log(self, model, **kwargs):
        from fraudflow.models.ensemble import log_model

        return log_model(model, **kwargs)

    def load_model(self, model_uri: str):
        from fraudflow.models.ensemble import load_model

        return load_model(model_uri)


# The families trained side by side; the ensemble combines them after their selection.
FAMILIES: dict[str, CandidateSpec] = {spec.name: spec for spec in (XGBoostCandidate(), MLPCandidate())}
CANDIDATES: dict[str, CandidateSpec] = FAMILIES | {"ensemble": EnsembleCandidate()}


def load_candidate_model(model_uri: str) -> tuple[CandidateSpec, Any]:
    """Load any logged or registered candidate, dispatching on its MLmodel flavours.

    Args:
        model_uri: Any MLflow model URI (``runs:/...``, ``models:/<model id>``,
            ``models:/name/1``, ``models:/name@champion``, a local path).

    Returns:
        The family's spec and the loaded model, so ``spec.predict_proba(model, X)`` scores.

    Raises:
        ValueError: the model was logged with none of the candidates' flavours.
    """
    from mlflow.models import Model

    # Model.load reads the MLmodel file only; get_model_info() would also look the model's
    # model_id up in the tracking store, which a Bento run on its own does not have.
    meta = Model.load(model_uri)
    flavors = meta.flavors
    if "pytorch" in flavors:  # MLflow's pytorch flavour unpickles a whole module: code, not data
        raise ValueError(
            f"{model_uri} is a pickled PyTorch module (MLflow's pytorch flavour); fraudflow loads "
            "MLP weights only (flavour fraudflow_mlp) and refuses to unpickle it"
        )
    calibration = (meta.metadata or {}).get(METADATA_KEY)
    for spec in (CANDIDATES["ensemble"], *FAMILIES.values()):  # an ensemble's members are below it
        if spec.flavor in flavors:
            model = spec.load_model(model_uri)
            return spec, Calibrated(model, Calibration.model_validate(calibration)) if calibration else model
    raise ValueError(f"{model_uri} has flavours {sorted(flavors)}; no candidate family logs any of them")
