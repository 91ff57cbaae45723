"""fraudflow's Airflow plugin: the lifecycle page in the UI's navigation, evidence links on tasks.

The api-server mounts :func:`fraudflow.ui.app.create_app` at ``/fraudflow`` (behind Airflow's
login) and shows it as the "fraudflow" entry of the navigation; the global operator links take
each task to its evidence (Data Docs, MLflow run, model card, drift report, rollout decision).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from fraudflow.ui.app import create_app
from fraudflow.ui.links import EVIDENCE_LINKS


class FraudflowPlugin(AirflowPlugin):
    name = "fraudflow"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/fraudflow", "name": "fraudflow"}]
    external_views = [
        {"name": "fraudflow", "href": "/fraudflow/", "destination": "nav", "url_route": "fraudflow"},
    ]
    global_operator_extra_links = EVIDENCE_LINKS
