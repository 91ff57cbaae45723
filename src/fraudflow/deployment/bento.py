"""A versioned Bento per registered model version: the deployable unit of one model.

The version is imported from the MLflow registry into the BentoML model store
(``bentoml.mlflow.import_model``) and the service is built around it with its model version
in the Bento's labels, using the committed ``bentofile.yaml`` as the base.
"""

from __future__ import annotations

import os

import yaml

from fraudflow import tags
from fraudflow.deployment.service_process import SERVICE_DIR
from fraudflow.registry import MODEL_NAME, get_version, set_version_tags
from fraudflow.settings import Settings, repo_root


def build_model_bento(settings: Settings, version: str) -> str:
    """Import ``fraud-detector`` v``version`` and build ``fraud_scoring:v<version>``; returns the
    Bento tag, also recorded on the model version (tag ``fraudflow.bento``)."""
    settings.bentoml_home.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(settings.bentoml_home)  # outside the build context
    import bentoml

    _use_bentoml_home(settings)

    from fraudflow.tracking import configure_mlflow

    configure_mlflow(settings)
    model_tag = f"{MODEL_NAME}:v{version}"
    try:
        model = bentoml.models.get(model_tag)
    except bentoml.exceptions.NotFound:
        # The version's serving facts travel with the weights: a Bento run on its own (no
        # MLflow) still knows its version, family and decision threshold.
        registered = get_version(settings, version)
        model = bentoml.mlflow.import_model(
            model_tag,
            f"models:/{MODEL_NAME}/{version}",
            labels={"model_version": str(version), "registry": MODEL_NAME},
            metadata={k: registered.tags[k] for k in (tags.THRESHOLD, tags.CANDIDATE) if k in registered.tags},
        )
    build_ctx = repo_root() / SERVICE_DIR
    spec = yaml.safe_load((build_ctx / "bentofile.yaml").read_text())
    spec["models"] = [str(model.tag)]
    spec["labels"] = {**spec.get("labels", {}), "model_version": str(version), "model": str(model.tag)}
    # The per-version bentofile lives outside the repo; relative paths in it still resolve
    # against the build context. (bentoml.bentos.build() turns the requirements path absolute
    # and then refuses it; building from a bentofile, as the CLI does, works.)
    bentofile = settings.bentoml_home / "bentofiles" / f"bentofile-v{version}.yaml"
    bentofile.parent.mkdir(parents=True, exist_ok=True)
    bentofile.write_text(yaml.safe_dump(spec, sort_keys=False))
    bento = bentoml.bentos.build_bentofile(str(bentofile), version=f"v{version}", build_ctx=str(build_ctx))
    set_version_tags(settings, version, {tags.BENTO: str(bento.tag)})
    return str(bento.tag)


def _use_bentoml_home(settings: Settings) -> None:
    """Point BentoML's stores at this home. BentoML resolves BENTOML_HOME once per process and
    memoizes its stores (singleton providers), so a second home in the same process would build
    into the first one's store; override the chain each call (found by the closed-loop test)."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = settings.bentoml_home
    dirs = {sub: home / sub for sub in ("bentos", "models", "envs", "tmp")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.bento_store_dir.set(str(dirs["bentos"]))
    BentoMLContainer.model_store_dir.set(str(dirs["models"]))
    BentoMLContainer.env_store_dir.set(str(dirs["envs"]))
    BentoMLContainer.tmp_bento_store_dir.set(str(dirs["tmp"]))
    BentoMLContainer.bento_store.set(BentoStore(str(dirs["bentos"])))
    BentoMLContainer.model_store.set(ModelStore(str(dirs["models"])))
    BentoMLContainer.tmp_bento_store.set(BentoStore(str(dirs["tmp"])))
