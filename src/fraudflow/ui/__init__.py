"""fraudflow inside the Airflow UI: the lifecycle page, served artifacts, task evidence links."""
