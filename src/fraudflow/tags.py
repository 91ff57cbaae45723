"""Every MLflow tag fraudflow writes or reads, named once.

Runs and model versions carry these tags so any prediction traces back to its data (see
``fraudflow.monitoring.explain``) and a person browsing MLflow sees why a version exists. Writers
and readers both use the constants: a renamed tag cannot leave a reader behind.
"""

from __future__ import annotations

PREFIX = "fraudflow."

# -- a model version (and the candidate run it came from)
CANDIDATE = PREFIX + "candidate"  # the model family ("xgboost", "mlp")
THRESHOLD = PREFIX + "threshold"  # the decision threshold chosen for the version
AVERAGE_PRECISION = PREFIX + "average_precision"
AUC_ROC = PREFIX + "auc_roc"
CARD_PRECISION_AT_100 = PREFIX + "card_precision_at_100"
TRAINING_PARENT_RUN = PREFIX + "training_parent_run"
TRAINING_WINDOW = PREFIX + "training_window"
TEST_WINDOW = PREFIX + "test_window"
FEATURE_SERVICE = PREFIX + "feature_service"
DATA_FINGERPRINT = PREFIX + "data_fingerprint"
TRAINING_SET = PREFIX + "training_set"  # folder of the training-set snapshot (drift reference)
REASON = PREFIX + "reason"  # why it was trained: "scheduled", "drift: ..."
FAILED_CHECKS = PREFIX + "failed_checks"  # the monitoring checks that fired the retraining
DRIFT_REPORT = PREFIX + "drift_report"
TEST_SCORES = PREFIX + "test_scores"  # parquet of its scores on the held-out test window
REFIT_OF = PREFIX + "refit_of"  # the judged candidate run this version refits on fresher labels
REFIT_WINDOW = PREFIX + "refit_window"  # the days the registered model was fit on
MODEL_CARD = PREFIX + "model_card"
BENTO = PREFIX + "bento"  # the Bento tag built for the version
ROLLOUT = PREFIX + "rollout"  # "promoted" / "rolled_back"
ROLLOUT_REASON = PREFIX + "rollout_reason"
APPROVAL = PREFIX + "approval"  # "approved" / "rejected" / "timed_out" (a person's answer before promotion)
APPROVED_BY = PREFIX + "approved_by"  # who answered in the Airflow UI (the HITL responder)

# -- the gate's verdict (on the training parent run and on the version)
GATE = PREFIX + "gate"  # "passed" / "failed"
GATE_REASON = PREFIX + "gate_reason"
BEST_CANDIDATE = PREFIX + "best_candidate"
CHAMPION_VERSION = PREFIX + "champion_version"

# -- any run started by a DAG task
AIRFLOW_RUN_ID = PREFIX + "airflow_run_id"

# -- monitoring runs
AS_OF = PREFIX + "as_of"
MONITORING = PREFIX + "monitoring"  # "passed" / "failed"
