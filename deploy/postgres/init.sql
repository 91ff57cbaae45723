-- Runs once, when the postgres container starts on an empty data volume (docker-entrypoint-initdb.d),
-- as POSTGRES_USER (fraudflow). fraudflow appends one of these names to FRAUDFLOW_POSTGRES_URL:
--   airflow  Airflow's metadata database and the Celery result backend
--   mlflow   MLflow's tracking and model-registry store
--   feast    Feast's SQL registry
CREATE DATABASE airflow OWNER fraudflow;
CREATE DATABASE mlflow OWNER fraudflow;
CREATE DATABASE feast OWNER fraudflow;
