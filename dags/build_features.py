"""
### Build features

Runs whenever `ingest_transactions` publishes a day (Asset `fraudflow_lake_transactions`):

1. **compute_feature_partitions**: recomputes only the feature days whose 38 input days
   changed (new day, or a re-published earlier one) and writes
   `lake/features/{customer,terminal}/date=<day>/` (the Feast offline store): in this process,
   or as Spark jobs on `FRAUDFLOW_SPARK_MASTER` with `FRAUDFLOW_ENGINE=spark` (same files).
2. **apply_feature_repo**: `feast apply` of `feature_repo/` (entities, views, the on-demand
   view for request-time inputs, feature service `fraud_detection_v1`).
3. **materialize_online_store**: loads the latest values up to the newest lake day into the
   online store (SQLite locally), then emits `fraudflow_online_features`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task

from fraudflow.orchestration.assets import LAKE_TRANSACTIONS, ONLINE_FEATURES
from fraudflow.orchestration.dag_defaults import default_args, start_date
from fraudflow.settings import get_settings

SETTINGS = get_settings()


@dag(
    schedule=[LAKE_TRANSACTIONS],
    start_date=start_date(SETTINGS),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(SETTINGS),
    tags=["fraudflow", "features", "feast"],
    doc_md=__doc__,
)
def build_features():
    @task(multiple_outputs=False)
    def compute_feature_partitions(run_id: str | None = None) -> dict:
        from fraudflow.features.compute import build_features as build
        from fraudflow.settings import get_settings

        result = build(get_settings(), run_id=run_id)
        return result.model_dump(mode="json")

    @task
    def apply_feature_repo() -> list[str]:
        from fraudflow.features.store import apply_feature_repo as apply
        from fraudflow.settings import get_settings

        return apply(get_settings())

    @task(outlets=[ONLINE_FEATURES], multiple_outputs=False)
    def materialize_online_store(built: dict, applied: list[str], run_id: str | None = None) -> dict:
        from fraudflow.features.store import materialize_online
        from fraudflow.lake import list_partitions
        from fraudflow.settings import get_settings

        settings = get_settings()
        days = list_partitions(settings)
        if not days:
            raise ValueError("the lake has no published partition to materialize")
        end = dt.datetime.combine(days[-1] + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
        return materialize_online(settings, end=end, run_id=run_id).model_dump(mode="json")

    materialize_online_store(compute_feature_partitions(), apply_feature_repo())


build_features()
