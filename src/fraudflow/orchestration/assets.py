"""Assets that hand work from DAG to DAG (producers list them in ``outlets``)."""

from airflow.sdk import Asset

# A day's transactions were published to the lake (validated, normalised, atomic).
LAKE_TRANSACTIONS = Asset(name="fraudflow_lake_transactions", uri="file:///fraudflow/lake/transactions")
# Feature partitions were (re)built and the Feast online store materialized up to them.
ONLINE_FEATURES = Asset(name="fraudflow_online_features", uri="file:///fraudflow/feast/online")
# A gate-approved model version got the MLflow alias `challenger`.
MODEL_CHALLENGER = Asset(name="fraudflow_model_challenger", uri="file:///fraudflow/mlflow/fraud-detector/challenger")
