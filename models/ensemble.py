"""The ``ensemble`` candidate: the mean of the base families' fraud probabilities, and its MLflow
flavour ``fraudflow_ensemble``.

Why a probability average: XGBoost's and the MLP's errors are not the same errors (trees split
on thresholds, the network is smooth in its inputs), so averaging their scores ranks fraud better
than either alone. On the handbook's full-size world it measured AP 0.682 against 0.659 and 0.663
(docs/benchmarks.md#model-quality). Both members are trained unweighted, so their outputs are
already close to probabilities and a plain mean needs no rescaling; the ensemble is then
calibrated like any family (``models/calibration.py``). Whether it is trained at all is decided by
prequential validation (``fraudflow.training.prequential.judge_ensemble``), never by the test week.

The flavour stores each member as its own MLflow model directory (``members/<family>``, in that
family's flavour, so the MLP stays weights-only) and registers ``python_function`` with this
module as its loader, so ``bentoml.mlflow.import_model`` and a Bento on its own load it like any
other version.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

FLAVOR_NAME = "fraudflow_ensemble"
MEMBERS_DIR = "members"
BASE_FAMILIES = ("xgboost", "mlp")


class EnsembleParams(BaseModel):
    """Each member family's hyper-parameters (its own params model validates them); unknown
    families, or an ensemble inside an ensemble, are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    members: dict[str, dict[str, Any]] = Field(default_factory=lambda: {name: {} for name in BASE_FAMILIES})

    @field_validator("members")
    @classmethod
    def _known_members(cls, members: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from fraudflow.models.candidates import CANDIDATES

        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two member families, got {sorted(members)}")
        for name, params in members.items():
            if name not in BASE_FAMILIES:
                raise ValueError(f"unknown member family {name!r} (members are {list(BASE_FAMILIES)})")
            CANDIDATES[name].validate_params(params)
        return {name: dict(params) for name, params in members.items()}


@dataclass(frozen=True)
class EnsembleModel:
    """Fitted member models by family (each the family's raw model, without calibration)."""

    members: dict[str, Any]


def fit_ensemble(X: pd.DataFrame, y: np.ndarray, params: EnsembleParams) -> EnsembleModel:
    """Fit every member family on the same rows with its own parameters."""
    from fraudflow.models.candidates import CANDIDATES

    return EnsembleModel({name: CANDIDATES[name].fit(X, y, p) for name, p in params.members.items()})


def predict_ensemble(model: EnsembleModel, X: pd.DataFrame) -> np.ndarray:
    """The mean of the members' fraud probabilities (float64, shape (n,))."""
    from fraudflow.models.candidates import CANDIDATES

    return np.mean([CANDIDATES[name].predict_proba(m, X) for name, m in model.members.items()], axis=0)


def save_model(
    model: EnsembleModel,
    path: str | Path,
    mlflow_model: Any = None,
    signature: Any = None,
    input_example: pd.DataFrame | None = None,
    **_: Any,
) -> None:
    """Write the members (each in its family's flavour) and the ensemble's MLmodel at ``path``."""
    import mlflow.pyfunc
    import mlflow.xgboost
    from mlflow.models import Model
    from mlflow.models.utils import _save_example

    from fraudflow.models import mlp_flavor
    from fraudflow.models.candidates import xgboost_requirements

    path = Path(path)
    path.mkdir(parents=True)
    savers = {
        "xgboost": lambda m, p: mlflow.xgboost.save_model(m, p, pip_requirements=xgboost_requirements()),
        "mlp": mlp_flavor.save_model,
    }
    for name, member in model.members.items():
        savers[name](member, str(path / MEMBERS_DIR / name))
    member_requirements = [(path / MEMBERS_DIR / name / "requirements.txt").read_text() for name in model.members]
    requirements = sorted({line for text in member_requirements for line in text.split()})
    (path / "requirements.txt").write_text("\n".join(requirements) + "\n")
    mlflow_model = mlflow_model or Model()
    if signature is not None:
        mlflow_model.signature = signature
    if input_example is not None:
        _save_example(mlflow_model, input_example, str(path))
    mlflow_model.add_flavor(FLAVOR_NAME, members=list(model.members), members_dir=MEMBERS_DIR)
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=MEMBERS_DIR)
    mlflow_model.save(str(path / "MLmodel"))


def log_model(model: EnsembleModel, *, name: str, **kwargs: Any):
    """Log ``model`` into the active run (MLflow's custom-flavour ``Model.log``)."""
    from mlflow.models import Model

    return Model.log(None, sys.modules[__name__], name=name, model=model, **kwargs)


def load_model(model_uri: str) -> EnsembleModel:
    """The ensemble at ``model_uri``, each member loaded by its own family's loader.

    Raises:
        ValueError: the directory is not a ``fraudflow_ensemble`` model, or a member is not
            one of its family's flavours (a pickled torch module is refused unopened).
    """
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    return _load_from_dir(Path(_download_artifact_from_uri(model_uri)))


def _load_from_dir(local: Path) -> EnsembleModel:
    from mlflow.models import Model

    from fraudflow.models.candidates import load_candidate_model, raw_model

    conf = Model.load(str(local / "MLmodel")).flavors.get(FLAVOR_NAME)
    if conf is None:
        raise ValueError(f"{local} is not a {FLAVOR_NAME} model")
    members = {}
    for name in conf["members"]:
        spec, member = load_candidate_model(str(local / conf["members_dir"] / name))
        if spec.name != name:
            raise ValueError(f"ensemble member {name!r} at {local} holds a {spec.name} model")
        members[name] = raw_model(member)
    return EnsembleModel(members)


class _PyFuncEnsemble:
    """``python_function`` view: probabilities for a frame of ``MODEL_INPUTS``."""

    def __init__(self, model: EnsembleModel) -> None:
        self.model = model

    def predict(self, data: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        return predict_ensemble(self.model, pd.DataFrame(data))


def _load_pyfunc(path: str) -> _PyFuncEnsemble:
    """MLflow's pyfunc loader hook (``path`` is the model directory or its members folder)."""
    local = Path(path)
    return _PyFuncEnsemble(_load_from_dir(local if (local / "MLmodel").exists() else local.parent))
