"""One settings object for every stage: where things live and which engines they use.

Environment and infrastructure live here (``FRAUDFLOW_*`` env vars override them); per-run
values (dates, seeds, reasons) are function arguments. Reading settings creates nothing on
disk: call :meth:`Settings.ensure_dirs` where a stage is about to write.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_PREFIX = "change-me"  # .env.example's placeholder values all start with it


class Profile(StrEnum):
    local = "local"
    production = "production"


def _default_home() -> Path:
    """``./.fraudflow`` beside the repo checkout when installed editable, else in the cwd."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir.parent.parent, package_dir.parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / "dags").is_dir():
            return candidate / ".fraudflow"
    return Path.cwd() / ".fraudflow"


def repo_root() -> Path:
    """The checkout holding dags/, feature_repo/ and expectations/ (next to the package)."""
    return _default_home().parent


class Settings(BaseSettings):
    """Where fraudflow keeps its state and which engines it talks to."""

    model_config = SettingsConfigDict(env_prefix="FRAUDFLOW_", env_file=None, extra="ignore")

    profile: Profile = Profile.local
    home: Path = Field(default_factory=_default_home)

    # Ingestion
    start_date: dt.date = dt.date(2018, 4, 1)
    ingest_catchup: bool = False  # unpaused, create a run for every day since start_date (not just the last)
    landing_timeout_seconds: int = Field(6 * 3600, ge=1)
    landing_poke_seconds: int = Field(60, ge=1)
    # A file is taken only once unchanged (mtime) this long, or at once beside a ``<name>.done``
    # marker: a file copied in place is not read half-written. None: 30 s in production, 0 local.
    landing_settle_seconds: float | None = Field(None, ge=0)
    # Deadline alert: a day not published this long after it ended (the sensor's wait plus
    # ingestion's own time). Airflow's DeadlineAlert, fired by the scheduler.
    ingest_deadline_seconds: int = Field(8 * 3600, ge=1)
    task_retries: int = Field(2, ge=0)
    task_retry_delay_seconds: int = Field(120, ge=0)

    # Validation (Great Expectations suites in expectations/ take these as parameters)
    time_origin: dt.date = dt.date(2018, 4, 1)  # TX_TIME_DAYS / TX_TIME_SECONDS count from here
    amount_ceiling: float = Field(50_000.0, gt=0)
    history_partitions: int = Field(7, ge=1)  # trailing partitions the batch bands are built on
    history_min_partitions: int = Field(3, ge=1)  # fewer than this: absolute bounds instead
    rows_band: tuple[float, float] = (0.5, 2.0)  # x trailing mean row count
    fraud_rate_band: float = Field(4.0, gt=1)  # max fraud rate = max(x * trailing mean, mean + margin)
    fraud_rate_margin: float = Field(0.05, ge=0)
    amount_mean_band: tuple[float, float] = (0.5, 2.0)  # x trailing mean amount
    absolute_rows: tuple[int, int] = (1, 1_000_000)
    absolute_fraud_rate_max: float = 0.2
    absolute_amount_mean: tuple[float, float] = (1.0, 5_000.0)
    data_docs_index_results: int = Field(60, ge=1)  # validation results the Data Docs index lists (newest)
    # The Data Docs index is rebuilt by a passing gate at most this often (a failing one always
    # rebuilds it); a backfill of many days pays for it once per interval, not once per day.
    data_docs_index_seconds: float = Field(600.0, ge=0)
    # GX 1.24.1 rebuilds an expectation's configuration on each of ~90 reads per validation;
    # True builds it once per run (fraudflow.ingestion.gx_configuration_cache), False runs GX as is.
    gx_configuration_cache: bool = True

    # Feast point-in-time joins run in chunks of whole days of at most this many entity rows
    # (fraudflow.features.point_in_time.historical_features): the offline store's peak memory follows it.
    offline_join_chunk_rows: int = Field(400_000, ge=1)
    # build_features computes blocks of at most this many days (each reads its 37 lookback days
    # too), so its peak memory follows the largest days, not the history's length.
    feature_block_days: int = Field(30, ge=1)
    # The data plane: "local" (numpy in the task's own process) or "spark" (build_features as
    # Spark jobs: ``spark_master`` is a cluster's spark://host:7077, or local[N], one JVM beside
    # the task). ``spark_conf``: more Spark properties, FRAUDFLOW_SPARK_CONF='{"k": "v"}'.
    engine: Literal["local", "spark"] = "local"
    spark_master: str = "local[2]"
    spark_conf: dict[str, str] = {}
    # Training
    train_schedule: str = "0 2 * * *"  # nightly, after the day's file has landed; "" turns it off
    training_deadline_seconds: int = Field(3 * 3600, ge=1)  # alert: a train_model run not done this long after queued
    train_days: int = Field(7, ge=1)
    test_days: int = Field(7, ge=1)
    # A training window with more rows than this keeps every fraud and a hashed share of the
    # other transactions, weighted (fraudflow.training.sampling); 0 never samples. The test
    # window is never sampled.
    training_max_train_rows: int = Field(1_000_000, ge=0)
    # Prequential model selection (fraudflow.training.prequential): parameter sets per family
    # (the defaults first), judged on this many folds before the test window; 1 judges only the
    # defaults (what the ensemble verdict needs), 0 skips selection. The search's cost bound.
    selection_trials: int = Field(3, ge=0)
    selection_folds: int = Field(2, ge=1)
    selection_workers: int = Field(2, ge=1)  # trials fitted side by side (spawned processes)
    selection_ensemble: bool = True  # train the families' average when the folds say it pays
    gate_min_average_precision: float = Field(0.50, ge=0, le=1)
    gate_min_auc_roc: float = Field(0.80, ge=0, le=1)
    gate_ap_tolerance: float = Field(0.03, ge=0)  # non-inferiority margin vs the champion
    refit_on_freshest_labels: bool = True  # register the gated candidate refit on the newest labelled days
    gate_slice_tolerance: float = Field(0.05, ge=0)  # per slice, CI lower bound of the difference > -this
    gate_slice_min_frauds: int = Field(100, ge=1)  # smaller slices are reported, not judged
    gate_bootstrap_resamples: int = Field(1000, ge=100)  # paired card bootstrap, overall and per slice

    # Serving and staged rollout
    serving_url: str = "http://127.0.0.1:3000"
    serving_autostart: bool = True  # deploy_model starts a service when none answers at serving_url
    shadow_requests: int = Field(400, ge=1)
    canary_requests: int = Field(400, ge=1)
    canary_share: float = Field(0.2, gt=0, le=1)
    # What shadow and canary judge (fraudflow.deployment.checks); shown in every decision.
    rollout_max_error_rate: float = Field(0.01, ge=0, le=1)  # challenger failures, covered or not
    rollout_max_p99_latency_ms: float = Field(50.0, gt=0)
    rollout_max_offline_psi: float = Field(0.25, gt=0)  # live scores vs the version's own test scores
    rollout_alert_volume_band: float = Field(1.5, ge=1)  # flagged share vs the champion's, either way
    rollout_min_shadow_requests: int = Field(200, ge=1)
    rollout_min_canary_requests: int = Field(100, ge=1)
    # A person approves (or rejects) promotion after a passed canary, in the Airflow UI (HITL);
    # None: required in the production profile only. No answer within the timeout = reject.
    require_approval: bool | None = None
    approval_timeout_seconds: int = Field(24 * 3600, ge=1)  # also the quarantine review's (no answer: keep)
    # A quarantined file triggers review_quarantine (release or keep, in the UI); None: production only.
    review_quarantine: bool | None = None
    prediction_flush_seconds: float = Field(1.0, gt=0)  # prediction log buffer; always flushed on stop
    # Shadow mode: requests waiting for the challenger's score, per worker. Past it a request is
    # logged without one (counted as shadow_dropped in /healthz), never delaying an answer.
    shadow_queue_max: int = Field(1000, ge=1)
    # Per worker: a larger body is answered 413 before it is read; more requests in flight, 503.
    serving_max_body_bytes: int = Field(1_048_576, ge=1024)  # a full 1000-row batch is ~200 KB
    serving_max_in_flight: int = Field(64, ge=1)
    api_token: str | None = None  # bearer token the scoring API requires (and the rollout replays send)

    # Monitoring (monitor_drift) and alerts
    # No champion yet: monitor_drift triggers the first training once the lake holds this many
    # days: the 37 days the windows reach back (30-day terminal windows behind the 7-day label
    # delay) before the training week, then train, gap and test weeks (37 + 21). With fewer, the
    # training week's windows are cut short: make up's 40-day world gave AP 0.48 (gate: 0.50).
    first_model_min_days: int = Field(58, ge=21)
    monitor_window_days: int = Field(7, ge=1)  # drift window; performance uses the same length, label delay older
    drift_amount_method: str = "wasserstein"  # Evidently stattest for amount columns (normed Wasserstein)
    drift_method: str = "psi"  # counts, terminal risk ratios and 0/1 flags
    prediction_drift_method: str = "psi"
    drift_threshold: float = Field(0.1, gt=0)  # Evidently's default for both methods
    drift_max_drifted_inputs: int = Field(0, ge=0)  # input drift fails above this many drifted columns
    monitor_min_logged_predictions: int = Field(500, ge=1)  # fewer live scores: score the lake window
    performance_ap_tolerance: float = Field(0.10, ge=0)  # allowed drop below the champion's gate AP
    performance_cp_tolerance: float = Field(0.10, ge=0)  # same for CP@100
    alert_webhook_url: str | None = None  # alerts also POSTed here as JSON (always logged)
    alert_error_rate: float = Field(0.05, ge=0, le=1)  # immediate alert above this share of 4xx/5xx
    # immediate alert above this share of answers scored on default features (store down, history
    # not written); first-seen cards and terminals are exact on the request alone and not counted
    alert_degraded_share: float = Field(0.05, ge=0, le=1)
    alert_min_requests: int = Field(20, ge=1)  # ...once at least this many requests were answered
    alert_webhook_timeout_seconds: float = Field(5.0, gt=0)
    serving_watch_schedule: str = "*/5 * * * *"  # watch_serving: service down / error rate

    mlflow_ui_url: str = "http://127.0.0.1:5000"  # `make mlflow`; the fraudflow page links runs there
    airflow_home_dir: Path | None = None  # Airflow's own home when not <home>/airflow (e.g. a shared one)

    # Production profile: the engines (required when profile=production, unused when local).
    # The lake, feature tables, prediction log and MLflow artifacts stay under ``home``, which
    # production mounts on a path every machine shares (NFS or a volume).
    postgres_url: str | None = None  # postgresql://user:pass@host:port (databases airflow, mlflow, feast)
    redis_url: str | None = None  # redis://host:port (Celery broker db 0, Feast online store db 1)
    mlflow_server_url: str | None = None  # http://host:port of `mlflow server` (Postgres store, proxied artifacts)
    airflow_api_url: str | None = None  # Airflow api-server base URL (Celery workers call its Execution API)
    airflow_jwt_secret: str | None = None  # shared by api-server, scheduler and workers
    feast_online_store: Literal["sqlite", "redis"] | None = None  # default: sqlite (local), redis (production)

    @property
    def online_store(self) -> str:
        if self.feast_online_store:
            return self.feast_online_store
        return "redis" if self.profile is Profile.production else "sqlite"

    @property
    def landing_settle(self) -> float:
        if self.landing_settle_seconds is not None:
            return self.landing_settle_seconds
        return 30.0 if self.profile is Profile.production else 0.0

    @property
    def approval_required(self) -> bool:
        if self.require_approval is not None:
            return self.require_approval
        return self.profile is Profile.production

    @property
    def quarantine_review_required(self) -> bool:
        if self.review_quarantine is not None:
            return self.review_quarantine
        return self.profile is Profile.production

    @model_validator(mode="after")
    def _production_needs_its_engines(self) -> Settings:
        if self.profile is Profile.production:
            missing = [
                f"FRAUDFLOW_{name.upper()}"
                for name in ("postgres_url", "redis_url", "mlflow_server_url")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"profile 'production' needs {', '.join(missing)} (see .env.example)")
            self._production_secrets_are_real()
        return self

    def _production_secrets_are_real(self) -> None:
        """Production refuses to start on an empty secret or on .env.example's placeholders
        (``change-me...``): the scoring API token is required, as is the Airflow JWT secret,
        and the database and Redis passwords (in their URLs) must not be placeholders."""
        secrets = {
            "FRAUDFLOW_API_TOKEN": self.api_token,
            "FRAUDFLOW_AIRFLOW_JWT_SECRET": self.airflow_jwt_secret,
        }
        empty = [name for name, value in secrets.items() if not (value or "").strip()]
        if empty:
            raise ValueError(f"profile 'production' needs {', '.join(empty)} (a generated secret; see .env.example)")
        in_urls = {
            "the password in FRAUDFLOW_POSTGRES_URL": urlsplit(self.postgres_url or "").password,
            "the password in FRAUDFLOW_REDIS_URL": urlsplit(self.redis_url or "").password,
        }
        placeholders = [
            name
            for name, value in (secrets | in_urls).items()
            if value and value.strip().lower().startswith(PLACEHOLDER_PREFIX)
        ]
        if placeholders:
            raise ValueError(
                f"profile 'production' refuses placeholder secrets ({PLACEHOLDER_PREFIX}...): "
                f"{', '.join(placeholders)}; generate real ones, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )

    def postgres_database(self, database: str, driver: str = "postgresql") -> str:
        """``postgres_url`` pointed at one database, with an SQLAlchemy driver if asked."""
        if not self.postgres_url:
            raise ValueError("FRAUDFLOW_POSTGRES_URL is not set")
        parts = urlsplit(self.postgres_url)
        return urlunsplit((driver, parts.netloc, f"/{database}", parts.query, ""))

    def redis_database(self, db: int) -> str:
        if not self.redis_url:
            raise ValueError("FRAUDFLOW_REDIS_URL is not set")
        return f"{self.redis_url.rstrip('/')}/{db}"

    @cached_property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    # -- data zones ---------------------------------------------------------------------
    @property
    def landing_dir(self) -> Path:
        return self.root / "landing" / "transactions"

    @property
    def lake_dir(self) -> Path:
        return self.root / "lake"

    @property
    def transactions_dir(self) -> Path:
        return self.lake_dir / "transactions"

    @property
    def spark_dir(self) -> Path:  # the Spark driver's scratch space and warehouse
        return self.root / "spark"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine" / "transactions"

    @property
    def lineage_log(self) -> Path:
        return self.root / "lineage" / "events.jsonl"

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def serving_dir(self) -> Path:
        return self.root / "serving"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    # -- engines ------------------------------------------------------------------------
    @property
    def airflow_home(self) -> Path:
        return self.airflow_home_dir or self.root / "airflow"

    @property
    def gx_dir(self) -> Path:
        return self.root / "gx"

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.profile is Profile.production and self.mlflow_server_url:
            return self.mlflow_server_url
        return f"sqlite:///{self.root / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.root / "mlflow" / "artifacts"

    @property
    def feast_dir(self) -> Path:
        return self.root / "feast"

    @property
    def bentoml_home(self) -> Path:
        return self.root / "bentoml"

    def ensure_dirs(self, *dirs: Path) -> None:
        for d in dirs or (self.landing_dir, self.lake_dir, self.staging_dir, self.reports_dir):
            d.mkdir(parents=True, exist_ok=True)


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; never cached, so tests can
    point ``FRAUDFLOW_HOME`` elsewhere between calls)."""
    return Settings()
