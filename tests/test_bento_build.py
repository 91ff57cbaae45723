"""A versioned Bento per registered model version, recorded in MLflow (real `bentoml build`)."""

from __future__ import annotations

import pytest

from fraudflow import registry
from tests.helpers import build_serving_home

pytestmark = pytest.mark.e2e


def test_build_model_bento_labels_and_records_the_version(settings, monkeypatch):
    build_serving_home(settings, days=20, customers=200, terminals=400)
    from fraudflow.bento import build_model_bento

    tag = build_model_bento(settings, "1")
    import bentoml

    bento = bentoml.bentos.get(tag)
    assert str(bento.tag) == "fraud_scoring:v1"
    assert bento.info.labels["model_version"] == "1"
    assert [str(m.tag) for m in bento.info.models] == ["fraud-detector:v1"]
    assert bento.path.startswith(str(settings.bentoml_home))
    version = registry.version_by_alias(settings, registry.CHAMPION)
    assert version.tags["fraudflow.bento"] == "fraud_scoring:v1"
    # Building again for the same version reuses the imported model (no duplicate import).
    assert len(bentoml.models.list("fraud-detector")) == 1
