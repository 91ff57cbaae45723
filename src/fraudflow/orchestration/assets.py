"""Assets that hand work from DAG to DAG (producers list them in ``outlets``)."""

from airflow.sdk import Asset

# A day's transactions were published to the lake (validated, normalised, atomic).
LAKE_TRANSACTIONS = Asset(name="fraudflow_lake_transactions", uri="file:///fraudflow/lake/transactions")
