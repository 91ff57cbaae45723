"""MLflow flavour ``fraudflow_mlp``: a :class:`~fraudflow.models.mlp.FraudMLP` stored as its
architecture (three numbers in the MLmodel file) and its weights (a ``state_dict`` file).

Why not MLflow's pytorch flavour: it pickles the whole module and loads it with
``weights_only=False``, i.e. it runs whatever code the artifact holds. Whoever could register a
model version could then run code inside the scoring service. Here the module's code is always
fraudflow's own class; the artifact only supplies tensors, read with
``torch.load(weights_only=True)``, which refuses any other pickled object before building it.
A version logged with the pickle-based pytorch flavour is refused without being opened
(:func:`fraudflow.models.candidates.load_candidate_model`).

The flavour also registers ``python_function`` (this module as its loader), which
``bentoml.mlflow.import_model`` and ``mlflow models serve`` need; that loader is the same
weights-only path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FLAVOR_NAME = "fraudflow_mlp"
WEIGHTS_FILE = "weights.pt"


def save_model(
    model: Any,
    path: str | Path,
    mlflow_model: Any = None,
    signature: Any = None,
    input_example: pd.DataFrame | None = None,
    **_: Any,
) -> None:
    """Write ``model``'s weights and architecture as an MLflow model directory at ``path``."""
    import mlflow.pyfunc
    import torch
    from mlflow.models import Model
    from mlflow.models.utils import _save_example

    path = Path(path)
    path.mkdir(parents=True)
    mlflow_model = mlflow_model or Model()
    if signature is not None:
        mlflow_model.signature = signature
    if input_example is not None:
        _save_example(mlflow_model, input_example, str(path))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path / WEIGHTS_FILE)
    (path / "requirements.txt").write_text(f"torch=={torch.__version__.split('+')[0]}\nnumpy=={np.__version__}\n")
    mlflow_model.add_flavor(
        FLAVOR_NAME, weights=WEIGHTS_FILE, architecture=dict(model.architecture), torch_version=str(torch.__version__)
    )
    mlflow.pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=WEIGHTS_FILE)
    mlflow_model.save(str(path / "MLmodel"))


def log_model(model: Any, *, name: str, **kwargs: Any):
    """Log ``model`` into the active run (MLflow's custom-flavour ``Model.log``)."""
    from mlflow.models import Model

    return Model.log(None, sys.modules[__name__], name=name, model=model, **kwargs)  # artifact_path: deprecated


def load_model(model_uri: str):
    """The FraudMLP at ``model_uri``, in eval mode: fraudflow's class, the artifact's tensors.

    Raises:
        pickle.UnpicklingError: the weights file holds anything but tensors (refused unbuilt).
        ValueError: the directory is not a ``fraudflow_mlp`` model.
    """
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    return _load_from_dir(Path(_download_artifact_from_uri(model_uri)))


def _load_from_dir(local: Path):
    import torch
    from mlflow.models import Model

    from fraudflow.models.mlp import FraudMLP

    conf = Model.load(str(local / "MLmodel")).flavors.get(FLAVOR_NAME)
    if conf is None:
        raise ValueError(f"{local} is not a {FLAVOR_NAME} model")
    shape = conf["architecture"]
    hidden = tuple(int(h) for h in shape["hidden"])
    model = FraudMLP(int(shape["n_inputs"]), hidden=hidden, dropout=float(shape["dropout"]))
    state = torch.load(local / conf["weights"], map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class _PyFuncMLP:
    """``python_function`` view: probabilities for a frame of ``MODEL_INPUTS``."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, data: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        from fraudflow.models.mlp import predict_mlp

        return predict_mlp(self.model, pd.DataFrame(data))


def _load_pyfunc(path: str) -> _PyFuncMLP:
    """MLflow's pyfunc loader hook (``path`` is the model directory or its data file)."""
    local = Path(path)
    return _PyFuncMLP(_load_from_dir(local if local.is_dir() else local.parent))
