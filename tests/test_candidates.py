"""The candidate families: they learn, are reproducible, and survive a real MLflow round trip.

Real xgboost, torch and MLflow (SQLite tracking store and registry in a temp folder); the
synthetic rows make fraud depend on the amount and the terminal's 7-day risk, so a model
that learns anything separates the held-out rows.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from fraudflow.features.compute import MODEL_INPUTS
from fraudflow.models.candidates import CANDIDATES, input_frame, load_candidate_model

FAMILIES = sorted(CANDIDATES)  # the two families and their ensemble: every test holds for each
TRAIN_ROWS = 3_500


def synthetic(n: int = 5_000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Handbook-shaped inputs on their natural scales; ~5% fraud driven by two of them."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {
        "TX_AMOUNT": rng.lognormal(3.8, 0.7, n),
        "TX_DURING_WEEKEND": rng.integers(0, 2, n),
        "TX_DURING_NIGHT": (rng.random(n) < 0.15).astype(int),
    }
    for w in (1, 7, 30):
        cols[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] = rng.poisson(3 * w, n)
        cols[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] = rng.lognormal(3.8, 0.3, n)
        cols[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] = rng.poisson(2 * w, n)
        cols[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] = rng.beta(0.3, 20, n)
    X = pd.DataFrame(cols)[MODEL_INPUTS]
    logit = -6.2 + 0.03 * (X["TX_AMOUNT"] - 45) + 70 * X["TERMINAL_ID_RISK_7DAY_WINDOW"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit.to_numpy()))).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def data():
    X, y = synthetic()
    return X[:TRAIN_ROWS], y[:TRAIN_ROWS], X[TRAIN_ROWS:], y[TRAIN_ROWS:]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return {name: spec.fit(X, y, {}) for name, spec in CANDIDATES.items()}


@pytest.fixture(scope="module")
def mlflow_experiment(tmp_path_factory):
    """A real MLflow SQLite store and registry; the caller's tracking URI is restored after."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)  # overrides any URI set in-process before this module
        try:
            yield mlflow.create_experiment("candidates", artifact_location=(root / "artifacts").as_uri())
        finally:
            mlflow.set_tracking_uri(None)  # back to the (restored) environment or the default


def test_registry_names_both_families_and_their_ensemble():
    assert FAMILIES == ["ensemble", "mlp", "xgboost"]
    assert {name: spec.flavor for name, spec in CANDIDATES.items()} == {
        "mlp": "fraudflow_mlp",
        "xgboost": "xgboost",
        "ensemble": "fraudflow_ensemble",
    }


@pytest.mark.parametrize("name", FAMILIES)
def test_candidate_learns_and_scores_probabilities(name, data, fitted):
    _, _, X_test, y_test = data
    scores = CANDIDATES[name].predict_proba(fitted[name], X_test)
    assert scores.shape == (len(X_test),)
    assert scores.dtype == np.float64
    assert ((scores >= 0) & (scores <= 1)).all()
    assert y_test.sum() >= 20  # enough held-out fraud for the AUC to mean something
    assert roc_auc_score(y_test, scores) > 0.8


@pytest.mark.parametrize("name", FAMILIES)
def test_fitting_twice_gives_identical_predictions(name, data, fitted):
    X, y, X_test, _ = data
    spec = CANDIDATES[name]
    again = spec.fit(X, y, {})
    np.testing.assert_array_equal(spec.predict_proba(again, X_test), spec.predict_proba(fitted[name], X_test))


def test_mlp_seed_changes_the_model(data, fitted):
    X, y, X_test, _ = data
    other = CANDIDATES["mlp"].fit(X, y, {"seed": 1})
    assert not np.array_equal(
        CANDIDATES["mlp"].predict_proba(other, X_test), CANDIDATES["mlp"].predict_proba(fitted["mlp"], X_test)
    )


def test_mlp_fit_leaves_global_torch_state_alone(data):
    X, y, _, _ = data
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    CANDIDATES["mlp"].fit(X, y, {"epochs": 1, "threads": 1})
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.get_rng_state(), rng_state)


def test_mlp_module_is_self_contained(fitted, data):
    """Raw inputs in, probabilities out: the standardisation travels inside the module."""
    model = fitted["mlp"]
    X, _, X_test, _ = data
    np.testing.assert_allclose(model.mean.numpy(), X.to_numpy(np.float32).mean(axis=0), rtol=0.05)
    assert (model.std > 0).all()
    assert not model.training
    with torch.inference_mode():
        probabilities = model(torch.from_numpy(X_test.to_numpy(np.float32)))
    assert probabilities.shape == (len(X_test),)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_xgboost_crippled_by_params_alone(data):
    X, y, X_test, _ = data
    spec = CANDIDATES["xgboost"]
    weak = spec.fit(X, y, {"n_estimators": 1})
    assert weak.get_booster().num_boosted_rounds() == 1
    assert spec.predict_proba(weak, X_test).shape == (len(X_test),)


@pytest.mark.parametrize("name", FAMILIES)
def test_mlflow_round_trip_and_registry(name, data, fitted, mlflow_experiment):
    import mlflow

    spec, model = CANDIDATES[name], fitted[name]
    X, _, X_test, _ = data
    expected = spec.predict_proba(model, X_test)
    with mlflow.start_run(experiment_id=mlflow_experiment):
        info = spec.log_model(model, name="model", input_example=X.head(20))
    assert spec.flavor in info.flavors
    assert {field.name for field in info.signature.inputs.inputs} == set(MODEL_INPUTS)

    loaded_spec, loaded = load_candidate_model(info.model_uri)
    assert loaded_spec is spec
    assert np.allclose(loaded_spec.predict_proba(loaded, X_test), expected)

    version = mlflow.register_model(info.model_uri, f"fraud-{name}")
    registered_spec, registered = load_candidate_model(f"models:/fraud-{name}/{version.version}")
    assert registered_spec is spec
    assert np.allclose(registered_spec.predict_proba(registered, X_test), expected)


class _Payload:
    """A pickle that runs code when it is loaded: what a malicious model version would hold."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_torch_module_is_refused_unopened(fitted, mlflow_experiment, tmp_path, data):
    """A version logged with MLflow's pytorch flavour (a pickled module, loaded with
    weights_only=False there) is refused before anything is unpickled; the weights-only flavour
    refuses a weights file holding anything but tensors, again without running it."""
    import mlflow.pytorch

    X, _, _, _ = data
    marker = tmp_path / "code-ran"
    model = fitted["mlp"]
    model.payload = _Payload(str(marker))  # travels inside the pickled module
    try:
        with mlflow.start_run(experiment_id=mlflow_experiment):
            info = mlflow.pytorch.log_model(model, name="pickled", serialization_format="pickle")
    finally:
        del model.payload
    marker.unlink(missing_ok=True)  # MLflow itself loads the pickle while logging (requirement inference)
    with pytest.raises(ValueError, match="refuses to unpickle"):
        load_candidate_model(info.model_uri)
    assert not marker.exists()

    with mlflow.start_run(experiment_id=mlflow_experiment):
        info = CANDIDATES["mlp"].log_model(model, name="model", input_example=X.head(5))
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "copy")))
    torch.save({"net.0.weight": _Payload(str(marker))}, local / "weights.pt")  # a tampered artifact
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_candidate_model(str(local))
    assert not marker.exists()


def test_the_mlp_is_also_a_pyfunc_model(fitted, mlflow_experiment, data):
    """``python_function`` (what bentoml.mlflow.import_model and mlflow models serve load) gives
    the same probabilities through the same weights-only loader."""
    import mlflow

    X, _, X_test, _ = data
    with mlflow.start_run(experiment_id=mlflow_experiment):
        info = CANDIDATES["mlp"].log_model(fitted["mlp"], name="model", input_example=X.head(5))
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    expected = CANDIDATES["mlp"].predict_proba(fitted["mlp"], X_test)
    assert np.allclose(np.asarray(pyfunc.predict(input_frame(X_test))), expected)


def test_log_model_outside_a_run_is_an_error(fitted, data):
    X, _, _, _ = data
    with pytest.raises(RuntimeError, match="active MLflow run"):
        CANDIDATES["xgboost"].log_model(fitted["xgboost"], input_example=X.head())


@pytest.mark.parametrize("name", FAMILIES)
def test_missing_column_is_named(name, data, fitted):
    _, _, X_test, _ = data
    with pytest.raises(ValueError, match="TERMINAL_ID_RISK_7DAY_WINDOW"):
        CANDIDATES[name].predict_proba(fitted[name], X_test.drop(columns="TERMINAL_ID_RISK_7DAY_WINDOW"))


def test_extra_and_reordered_columns_are_errors(data):
    _, _, X_test, _ = data
    with pytest.raises(ValueError, match="unexpected columns \\['TX_FRAUD'\\]"):
        input_frame(X_test.assign(TX_FRAUD=0))
    with pytest.raises(ValueError, match="out of order"):
        input_frame(X_test[MODEL_INPUTS[::-1]])
    frame = input_frame(X_test)
    assert list(frame.columns) == MODEL_INPUTS
    assert (frame.dtypes == np.float32).all()


@pytest.mark.parametrize("name", FAMILIES)
def test_unknown_param_is_an_error(name, data):
    X, y, _, _ = data
    with pytest.raises(ValidationError, match="n_trees"):
        CANDIDATES[name].fit(X, y, {"n_trees": 10})


def test_labels_need_both_classes(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="only class 0"):
        CANDIDATES["xgboost"].fit(X, np.zeros_like(y), {})
    with pytest.raises(ValueError, match="one value per input row"):
        CANDIDATES["mlp"].fit(X, y[:-1], {})


def test_mlp_rejects_non_finite_inputs(data, fitted):
    _, _, X_test, _ = data
    broken = X_test.copy()
    broken.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 row"):
        CANDIDATES["mlp"].predict_proba(fitted["mlp"], broken)
