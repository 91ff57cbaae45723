"""A versioned Bento per registered model version: the deployable unit of one model.

The version is imported from the MLflow registry into the BentoML model store
(``bentoml.mlflow.import_model``) and the service is built around it with its model version
in the Bento's labels, using the committed ``bentofile.yaml`` as the base.
"""

from __future__ import annotations

import os

import yaml

from fraudflow.registry import MODEL_NAME, set_version_tags
from fraudflow.rollout import SERVICE_DIR
from fraudflow.settings import Settings, repo_root


def build_model_bento(settings: Settings, version: str) -> str:
    """Import ``fraud-detector`` v``version`` and build ``fraud_scoring:v<version>``; returns the
    Bento tag, also recorded on the model version (tag ``fraudflow.bento``)."""
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(settings.bentoml_home)  # outside the build context
    import bentoml

    from fraudflow.tracking import configure_mlflow

    configure_mlflow(settings)
    model_tag = f"{MODEL_NAME}:v{version}"
    try:
        model = bentoml.models.get(model_tag)
    except bentoml.exceptions.NotFound:
        model = bentoml.mlflow.import_model(
            model_tag, f"models:/{MODEL_NAME}/{version}", labels={"model_version": str(version), "registry": MODEL_NAME}
        )
    build_ctx = repo_root() / SERVICE_DIR
    spec = yaml.safe_load((build_ctx / "bentofile.yaml").read_text())
    bento = bentoml.bentos.build(
        spec["service"],
        name=spec["name"],
        version=f"v{version}",
        labels={**spec.get("labels", {}), "model_version": str(version), "model": str(model.tag)},
        description=spec.get("description"),
        include=spec.get("include"),
        python={
            "requirements_txt": str((build_ctx / spec["python"]["requirements_txt"]).resolve()),
            "lock_packages": False,
        },
        models=[str(model.tag)],
        build_ctx=str(build_ctx),
    )
    set_version_tags(settings, version, {"fraudflow.bento": str(bento.tag)})
    return str(bento.tag)
