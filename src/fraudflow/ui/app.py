"""The FastAPI app the fraudflow Airflow plugin mounts at ``/fraudflow`` in the api-server.

Every route sits behind Airflow's own authentication (the ``get_user`` dependency the REST API
uses: the UI's ``_token`` cookie or a bearer token); the page itself redirects a visitor who is
not logged in to Airflow's login page and back. ``/artifacts/<path>`` serves files of the
fraudflow home only: the resolved path must stay inside the home (no ``..``, no symlink out),
else 404. Markdown artifacts (gate reports, model cards) are rendered, HTML ones (Evidently,
GX Data Docs, model cards) served as they are.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from fraudflow.ui.overview import MOUNT, overview
from fraudflow.ui.page import render_page


def _settings():
    from fraudflow.settings import get_settings

    return get_settings()


async def _user(request: Request) -> Any:
    """Airflow's authenticated user, as Airflow's REST API resolves it (401/403 otherwise)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if token else None
    return await get_user(request, None, bearer)


User = Annotated[Any, Depends(_user)]


def resolve_artifact(root: Path, relative: str) -> Path:
    """The file ``relative`` names under ``root``; 404 for anything outside it or missing."""
    base = root.resolve()
    try:
        target = (base / relative).resolve()
    except (OSError, RuntimeError):
        raise HTTPException(404, "no such artifact") from None
    if not target.is_relative_to(base) or not target.is_file():
        raise HTTPException(404, "no such artifact")
    return target


def create_app() -> FastAPI:
    app = FastAPI(title="fraudflow", description="fraudflow's lifecycle page inside the Airflow UI")

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request):
        try:
            user = await _user(request)
        except HTTPException:
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=f"{MOUNT}/"), status_code=303)
        return HTMLResponse(render_page(overview(_settings()), user=user.get_name()))

    @app.get("/api/overview")
    def overview_json(user: User) -> JSONResponse:
        return JSONResponse(overview(_settings()))

    @app.get("/artifacts/{relative:path}")
    def artifact(relative: str, user: User):
        target = resolve_artifact(_settings().root, relative)
        if target.suffix == ".md":
            from fraudflow.training.model_card import markdown_to_html

            return HTMLResponse(f"<!doctype html><meta charset=utf-8>{markdown_to_html(target.read_text())}")
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return FileResponse(target, media_type=media)

    @app.get("/versions/{version}/card")
    def model_card(version: str, user: User):
        """The version's model card (rendered HTML), found through its registry tag."""
        from mlflow.exceptions import MlflowException

        from fraudflow import tags
        from fraudflow.registry import get_version

        settings = _settings()
        try:
            card = get_version(settings, version).tags.get(tags.MODEL_CARD)
        except MlflowException:
            raise HTTPException(404, f"fraud-detector has no version {version!r}") from None
        if not card:
            raise HTTPException(404, f"version {version} has no model card")
        return FileResponse(
            resolve_artifact(settings.root, str(Path(card).with_suffix(".html"))), media_type="text/html"
        )

    @app.get("/mlflow/runs/{run_id}")
    def mlflow_run(run_id: str, user: User):
        """To the run in the MLflow UI (``make mlflow``; ``FRAUDFLOW_MLFLOW_UI_URL``)."""
        from mlflow.exceptions import MlflowException

        from fraudflow.registry import _client

        settings = _settings()
        try:
            experiment = _client(settings).get_run(run_id).info.experiment_id
        except MlflowException:
            raise HTTPException(404, f"no MLflow run {run_id!r}") from None
        return RedirectResponse(f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}")

    return app
