"""Every DAG imports cleanly and quickly, carries its metadata, and parses without heavy work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
HEAVY = [
    "pandas",
    "numpy",
    "pyarrow",
    "great_expectations",
    "feast",
    "mlflow",
    "xgboost",
    "torch",
    "bentoml",
    "evidently",
    "sklearn",
    "scipy",
]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dag_ids, "no DAG found"


def test_each_file_imports_within_airflows_own_timeout(monkeypatch):
    """Airflow's dagbag_import_timeout (set to 2 s) turns a slow file into an import error."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT", "2")
    for path in DAG_FILES:
        assert settings.get_dagbag_import_timeout(str(path)) == 2
        bag = DagBag(str(path))
        assert bag.import_errors == {}, path.name


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_does_no_heavy_import(path):
    """Parsing runs in the scheduler's loop: a DAG file must not import the ML stack."""
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {str(path)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_dag_metadata(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 80, f"{dag_id} has no doc_md"
        assert dag.default_args.get("owner") not in (None, "airflow"), f"{dag_id} has no owner"
        assert dag.default_args.get("retries", 0) >= 1, f"{dag_id} has no retries"
