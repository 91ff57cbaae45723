"""The package's layout rules: one source per fact, nothing done at import, modules a reader can hold."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import fraudflow

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "fraudflow"
CODE_DIRS = ["src", "dags", "services", "feature_repo", "models", "plugins", "benchmarks", "tests"]
MAX_MODULE_LINES = 350

# Run in a fresh interpreter: Settings refuses to be built, then every module of the package and
# the service module are imported. A module that reads settings at import fails the import.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import fraudflow, fraudflow.settings as s

def refuse(*args, **kwargs):
    raise RuntimeError("settings read at import time")

s.Settings.__init__ = refuse
failed = {}
names = [m.name for m in pkgutil.walk_packages(fraudflow.__path__, "fraudflow.")]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 -- every failure is reported, with its module
        failed[name] = repr(exc)
sys.path.insert(0, sys.argv[1])
try:
    importlib.import_module("service")
except Exception as exc:  # noqa: BLE001
    failed["services/fraud_scoring/service.py"] = repr(exc)
print(json.dumps({"imported": len(names) + 1, "failed": failed}))
"""


def test_no_module_reads_settings_at_import():
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, str(REPO / "services" / "fraud_scoring")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["imported"] > 30
    assert result["failed"] == {}


def test_the_import_check_sees_a_module_that_reads_settings(tmp_path):
    """The check above is only worth something if it fails on the bad case."""
    bad = tmp_path / "reads_settings.py"
    bad.write_text("from fraudflow.settings import get_settings\nCEILING = get_settings().amount_ceiling\n")
    probe = _IMPORT_ALL.replace('importlib.import_module("service")', 'importlib.import_module("reads_settings")')
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True)
    failed = json.loads(out.stdout.strip().splitlines()[-1])["failed"]
    assert "settings read at import time" in failed["services/fraud_scoring/service.py"]


# a quoted "fraudflow.<name>" (not a file name), or one inside an MLflow filter: tags.`fraudflow.<name>`
_TAG_LITERAL = re.compile(r"""["']fraudflow\.(?!(?:json|py|yaml|yml|md)["'])[a-z_]+["']|tags\.`fraudflow\.""")


def tag_literals(root: Path) -> list[str]:
    """``"fraudflow.<name>"`` strings outside ``fraudflow/tags.py`` (logger names excepted)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == PACKAGE / "tags.py" or ".venv" in path.parts or path == Path(__file__):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _TAG_LITERAL.search(line) and "getLogger(" not in line and "logger=" not in line:
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_mlflow_tag_names_are_written_only_in_the_tag_module():
    found = [hit for d in CODE_DIRS for hit in tag_literals(REPO / d)]
    assert found == []


def test_the_tag_check_sees_a_literal(tmp_path):
    (tmp_path / "writer.py").write_text('TAGS = {"fraudflow.gate": "passed"}\nQ = "tags.`fraudflow.reason` = 1"\n')
    assert tag_literals(tmp_path) == [
        'writer.py:1: TAGS = {"fraudflow.gate": "passed"}',
        'writer.py:2: Q = "tags.`fraudflow.reason` = 1"',
    ]


def test_partition_folders_are_built_in_one_place():
    """``date=`` folder names are built and parsed only by ``fraudflow.layout``."""
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "layout.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""f?["']date=""", line)
    ]
    assert hits == []


def test_modules_stay_small_enough_to_read():
    sizes = {
        m.name: len(Path(m.module_finder.path, m.name.rsplit(".", 1)[-1] + ".py").read_text().splitlines())
        for m in pkgutil.walk_packages(fraudflow.__path__, "fraudflow.")
        if not m.ispkg
    }
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_validating_requests_builds_settings_at_most_once(monkeypatch):
    """Reading settings lazily must not mean once per request: building Settings costs ~3 ms,
    which once tripled the scoring service's CPU per request."""
    import fraudflow.settings as settings_module
    from fraudflow.serving import scoring

    built = []
    original = settings_module.Settings.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(settings_module.Settings, "__init__", counting)
    monkeypatch.setenv("FRAUDFLOW_AMOUNT_CEILING", "12345")  # a value no earlier test cached
    body = {"transaction_id": 1, "tx_datetime": "2018-04-01T10:00:00", "customer_id": "1", "terminal_id": "2"}
    for i in range(100):
        scoring.Transaction.model_validate({**body, "tx_amount": float(i)})
    assert len(built) == 1
