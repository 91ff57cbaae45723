"""fraudflow: card transactions from daily landing files to a gated, staged, monitored fraud-scoring service.

Every stage is a plain function in a module of this package; Airflow DAGs, the CLI, the
BentoML service and the tests all call the same functions.
"""

__version__ = "0.1.0"
