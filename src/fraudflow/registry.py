"""The MLflow model registry as fraudflow's deployment record: aliases, not stages.

``challenger`` marks the version the gate let through; ``champion`` the one serving;
``previous`` the champion before the last promotion, so a rollback is one alias move.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fraudflow.failpoints import failpoint
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


def get_version(settings: Settings, version: str, name: str = MODEL_NAME) -> VersionRef:
    return _ref(_client(settings).get_model_version(name, version))


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


class AliasMoves(BaseModel):
    """Several alias moves that must happen together, journaled so a crash cannot split them."""

    targets: dict[str, str | None]  # alias -> version (None: remove the alias)
    reason: str
    at: str = ""


def _journal_path(settings: Settings) -> Path:
    return settings.serving_dir / "alias_moves.json"


def move_aliases(
    settings: Settings, targets: dict[str, str | None], *, reason: str, name: str = MODEL_NAME
) -> dict[str, str]:
    """Set each alias to its target version (``None`` removes it) as one recoverable step.

    MLflow moves one alias per call, so a process killed between two calls would leave the
    registry half-moved (e.g. ``champion`` and ``previous`` on one version). The targets are
    written to ``serving/alias_moves.json`` first and the journal is removed only when every
    move is done; :func:`recover_alias_moves` re-applies a journal left behind. Setting an alias
    is idempotent, so re-applying converges whatever point the crash hit.

    Returns:
        The aliases after the moves.
    """
    journal = _journal_path(settings)
    journal.parent.mkdir(parents=True, exist_ok=True)
    record = AliasMoves(targets=targets, reason=reason, at=dt.datetime.now(dt.UTC).isoformat())
    tmp = journal.with_name(f".{journal.name}.{os.getpid()}.tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    os.replace(tmp, journal)
    _apply_moves(settings, targets, name)
    journal.unlink()
    return aliases(settings, name)


def _apply_moves(settings: Settings, targets: dict[str, str | None], name: str) -> None:
    client = _client(settings)
    current = aliases(settings, name)
    for alias, version in targets.items():
        if version is None:
            if alias in current:
                client.delete_registered_model_alias(name, alias)
        elif current.get(alias) != version:
            client.set_registered_model_alias(name, alias, version)
        failpoint("between_alias_moves")


def recover_alias_moves(settings: Settings, name: str = MODEL_NAME) -> AliasMoves | None:
    """Finish alias moves a crashed process left half-done; returns them (``None``: nothing to do)."""
    journal = _journal_path(settings)
    if not journal.exists():
        return None
    record = AliasMoves.model_validate_json(journal.read_text())
    _apply_moves(settings, record.targets, name)
    journal.unlink()
    return record


def promote_version(settings: Settings, version: str, name: str = MODEL_NAME) -> dict[str, str]:
    """``champion`` -> ``version``; the old champion becomes ``previous``; ``challenger`` is
    removed only if it still points at ``version`` (a newer challenger registered meanwhile
    keeps its alias and waits for its own rollout)."""
    current = aliases(settings, name)
    targets: dict[str, str | None] = {}
    if current.get(CHAMPION) and current[CHAMPION] != version:
        targets[PREVIOUS] = current[CHAMPION]
    targets[CHAMPION] = version
    if current.get(CHALLENGER) == version:
        targets[CHALLENGER] = None
    return move_aliases(settings, targets, reason=f"promote v{version}", name=name)


def promote_challenger(settings: Settings, name: str = MODEL_NAME) -> dict[str, str]:
    """Promote whatever ``challenger`` points at (a person's command; rollouts use
    :func:`promote_version` with the version they staged)."""
    current = aliases(settings, name)
    if CHALLENGER not in current:
        raise LookupError(f"{name} has no {CHALLENGER} alias to promote")
    return promote_version(settings, current[CHALLENGER], name)


def rollback_champion(settings: Settings, name: str = MODEL_NAME) -> dict[str, str]:
    """Swap ``champion`` back to ``previous`` (one command; the rolled-back version becomes
    ``previous`` so the move can itself be undone)."""
    current = aliases(settings, name)
    if PREVIOUS not in current:
        raise LookupError(f"{name} has no {PREVIOUS} version to roll back to")
    targets = {CHAMPION: current[PREVIOUS], PREVIOUS: current.get(CHAMPION)}
    return move_aliases(settings, targets, reason=f"rollback to v{current[PREVIOUS]}", name=name)


def drop_challenger(settings: Settings, version: str, name: str = MODEL_NAME) -> dict[str, str]:
    """Remove ``challenger`` if it still points at ``version`` (a rolled-back rollout)."""
    if aliases(settings, name).get(CHALLENGER) != version:
        return aliases(settings, name)
    return move_aliases(settings, {CHALLENGER: None}, reason=f"reject v{version}", name=name)


def delete_alias(settings: Settings, alias: str, name: str = MODEL_NAME) -> None:
    _client(settings).delete_registered_model_alias(name, alias)
