"""The MLflow model registry as fraudflow's deployment record: aliases, not stages.

``challenger`` marks the version the gate let through; ``champion`` the one serving;
``previous`` the champion before the last promotion, so a rollback is one alias move.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fraudflow.settings import Settings

MODEL_NAME = "fraud-detector"
CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


class VersionRef(BaseModel):
    name: str
    version: str
    run_id: str | None
    source: str
    aliases: list[str]
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _client(settings: Settings):
    from mlflow import MlflowClient

    from fraudflow.tracking import configure_mlflow

    configure_mlflow(settings)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)


def _ref(mv) -> VersionRef:
    return VersionRef(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        aliases=list(mv.aliases or []),
        tags=dict(mv.tags or {}),
    )


def version_by_alias(settings: Settings, alias: str, name: str = MODEL_NAME) -> VersionRef | None:
    from mlflow.exceptions import MlflowException

    try:
        return _ref(_client(settings).get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def aliases(settings: Settings, name: str = MODEL_NAME) -> dict[str, str]:
    """alias -> version for the registered model ({} when it does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return {k: str(v) for k, v in _client(settings).get_registered_model(name).aliases.items()}
    except MlflowException:
        return {}


def register_challenger(
    settings: Settings, *, model_uri: str, run_id: str, tags: dict[str, Any], name: str = MODEL_NAME
) -> VersionRef:
    """Register ``model_uri`` as a new version and point ``challenger`` at it."""
    import mlflow

    client = _client(settings)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="Card-fraud scorer trained by fraudflow's train_model DAG.")
    # A logged model's URI (models:/m-<id>) must travel with its model_id: the local SQLite store
    # accepts it without, an MLflow server rejects it (INVALID_PARAMETER_VALUE).
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(
        name=name, source=model_uri, run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
    )
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return _ref(client.get_model_version(name, mv.version))


def set_version_tags(settings: Settings, version: str, tags: dict[str, Any], name: str = MODEL_NAME) -> None:
    client = _client(settings)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def promote_challenger(settings: Settings, name: str = MODEL_NAME) -> dict[str, str]:
    """``champion`` -> the challenger's version; the old champion becomes ``previous``."""
    client = _client(settings)
    current = aliases(settings, name)
    if CHALLENGER not in current:
        raise LookupError(f"{name} has no {CHALLENGER} alias to promote")
    if CHAMPION in current and current[CHAMPION] != current[CHALLENGER]:
        client.set_registered_model_alias(name, PREVIOUS, current[CHAMPION])
    client.set_registered_model_alias(name, CHAMPION, current[CHALLENGER])
    client.delete_registered_model_alias(name, CHALLENGER)
    return aliases(settings, name)


def rollback_champion(settings: Settings, name: str = MODEL_NAME) -> dict[str, str]:
    """Swap ``champion`` back to ``previous`` (one command; the rolled-back version becomes
    ``previous`` so the move can itself be undone)."""
    client = _client(settings)
    current = aliases(settings, name)
    if PREVIOUS not in current:
        raise LookupError(f"{name} has no {PREVIOUS} version to roll back to")
    client.set_registered_model_alias(name, CHAMPION, current[PREVIOUS])
    if CHAMPION in current:
        client.set_registered_model_alias(name, PREVIOUS, current[CHAMPION])
    return aliases(settings, name)


def delete_alias(settings: Settings, alias: str, name: str = MODEL_NAME) -> None:
    _client(settings).delete_registered_model_alias(name, alias)
