"""The Airflow-facing part of fraudflow: Asset constants and operators the DAGs wire in.

Only dags/ imports this subpackage; the stage modules never import Airflow.
"""
