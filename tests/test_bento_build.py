"""A versioned Bento per registered model version, recorded in MLflow (real `bentoml build`)."""

from __future__ import annotations

import pytest

from fraudflow import registry, tags
from tests.helpers import build_serving_home

pytestmark = pytest.mark.e2e


def test_build_model_bento_labels_and_records_the_version(settings, monkeypatch):
    build_serving_home(settings, days=20, customers=200, terminals=400)
    from fraudflow.deployment.bento import build_model_bento

    tag = build_model_bento(settings, "1")
    import bentoml

    bento = bentoml.bentos.get(tag)
    assert str(bento.tag) == "fraud_scoring:v1"
    assert bento.info.labels["model_version"] == "1"
    assert [str(m.tag) for m in bento.info.models] == ["fraud-detector:v1"]
    assert bento.path.startswith(str(settings.bentoml_home))
    version = registry.version_by_alias(settings, registry.CHAMPION)
    assert version.tags[tags.BENTO] == "fraud_scoring:v1"
    # Building again for the same version reuses the imported model (no duplicate import).
    assert len(bentoml.models.list("fraud-detector")) == 1


def test_each_home_builds_into_its_own_bentoml_store(tmp_path, monkeypatch):
    """BentoML memoizes its stores per process: the second home of a process (the closed-loop
    test after test_build_model_bento_...) must not land in the first home's store."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    from fraudflow.deployment.bento import _use_bentoml_home
    from fraudflow.settings import get_settings

    for name in ("first", "second"):
        monkeypatch.setenv("FRAUDFLOW_HOME", str(tmp_path / name))
        settings = get_settings()
        _use_bentoml_home(settings)
        assert BentoMLContainer.bento_store.get()._path == settings.bentoml_home / "bentos"
        assert BentoMLContainer.model_store.get()._path == settings.bentoml_home / "models"


def test_a_built_bento_serves_its_packed_model_on_its_own(settings):
    """`bentoml serve fraud_scoring:v<N>` answers with model N from the Bento's own model store:
    no MLflow (its store moved away) and whatever the deployment state says."""
    import shutil

    import httpx

    from fraudflow.deployment.bento import build_model_bento
    from fraudflow.deployment.controller import score_bodies
    from fraudflow.deployment.service_process import ServingProcess
    from fraudflow.serving.state import DeploymentState, write_state

    frame = build_serving_home(settings, days=20, customers=200, terminals=400)
    tag = build_model_bento(settings, "1")
    write_state(settings, DeploymentState(champion="7", reason="a state the Bento must ignore"))
    mlflow_dir = settings.root / "mlflow"
    shutil.move(mlflow_dir, settings.root / "mlflow-away")
    service = ServingProcess(settings, bento=tag).start(timeout=180)
    try:
        answer = httpx.post(f"{service.url}/score", json=score_bodies(frame.tail(1))[0], timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["model_version"] == "1" and body["served_by"] == "champion"
        assert 0.0 <= body["fraud_probability"] <= 1.0
    finally:
        service.stop()
        shutil.move(settings.root / "mlflow-away", mlflow_dir)
