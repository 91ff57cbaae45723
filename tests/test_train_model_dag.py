"""build_features and train_model through real Airflow, Feast, GX and MLflow."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from fraudflow import registry, tags
from fraudflow.demo.simulate import SimulationConfig, simulate_transactions
from fraudflow.orchestration.runtime import as_logical_date, load_dag, run_dag
from fraudflow.schema import normalise_transactions
from fraudflow.tracking import TRAINING_EXPERIMENT
from tests.helpers import publish_history

pytestmark = pytest.mark.e2e

WORLD = SimulationConfig(days=45, customers=800, terminals=1600, seed=11)
LAST_DAY = WORLD.start + dt.timedelta(days=WORLD.days - 1)
FAST = {"mlp": {"epochs": 4}}


@pytest.fixture(scope="module")
def trained_home(airflow_db, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUDFLOW_HOME", str(tmp_path_factory.mktemp("train") / "home"))
        # A small world (800 cards) lands near AP 0.5; the floors are config: lowered here so the
        # test is about the mechanics. Full-size quality is benchmarks/model_quality.py's job.
        mp.setenv("FRAUDFLOW_GATE_MIN_AVERAGE_PRECISION", "0.3")
        mp.setenv("FRAUDFLOW_GATE_MIN_AUC_ROC", "0.7")
        from fraudflow.settings import get_settings

        settings = get_settings()
        publish_history(settings, normalise_transactions(simulate_transactions(WORLD)), validate=True)
        outcome = run_dag(load_dag("build_features"), logical_date=None)  # no logical date, as a manual trigger
        assert outcome.state == "success", outcome
        yield settings


def _client(settings):
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri)


def test_train_model_registers_a_challenger_then_the_gate_stops_a_crippled_one(trained_home, monkeypatch):
    settings = trained_home
    # xgboost's parameters chosen by prequential selection (2 trials, 1 fold); mlp's given (FAST)
    monkeypatch.setenv("FRAUDFLOW_SELECTION_TRIALS", "2")
    monkeypatch.setenv("FRAUDFLOW_SELECTION_FOLDS", "1")
    dag = load_dag("train_model")
    assert (settings.feast_dir / "online_store.db").exists()

    # Triggered with no logical date (Airflow 3's Trigger button, `fraudflow run train_model`):
    # the run date defaults to the newest published day.
    good = run_dag(dag, logical_date=None, conf={"candidate_params": FAST, "reason": "test"})
    assert good.state == "success", good
    assert good.logical_date is None
    client = _client(settings)
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if r.info.run_name.startswith("select ")]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r not in trials]
    assert len(parents) == 1 and len(children) == 3  # two candidates and the refit of the better one
    assert sorted(r.info.run_name for r in trials)[0].startswith("select xgboost") and len(trials) == 2
    assert all("fold0.average_precision" in r.data.metrics for r in trials)
    candidates = [c for c in children if tags.REFIT_OF not in c.data.tags]
    (refit,) = [c for c in children if tags.REFIT_OF in c.data.tags]
    assert {c.data.tags[tags.CANDIDATE] for c in candidates} == {"xgboost", "mlp"}
    assert refit.data.tags[tags.REFIT_OF] in {c.info.run_id for c in candidates}
    for child in candidates:
        assert {"auc_roc", "average_precision", "card_precision_at_100"} <= set(child.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"roc_curve.png", "pr_curve.png"} <= artifacts
        assert child.data.params["model.n_jobs" if "xgboost" in child.info.run_name else "model.epochs"]
    # MLflow 3 logs models as LoggedModels linked to their run, not as run artifacts.
    logged = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    assert {m.source_run_id for m in logged} == {c.info.run_id for c in children}
    parent = parents[0]
    assert parent.data.tags[tags.GATE] == "passed"
    assert parent.data.tags[tags.FEATURE_SERVICE] == "fraud_detection_v1"
    assert parent.data.tags["mlflow.source.git.commit"]
    lineage = json.loads(Path(client.download_artifacts(parent.info.run_id, "lineage.json")).read_text())
    assert len(lineage["partitions"]) == 21 and len(lineage["validation_ids"]) == 21
    assert all(v.startswith("gx:landing_gate/") for v in lineage["validation_ids"])

    challenger = registry.version_by_alias(settings, registry.CHALLENGER)
    assert challenger is not None and challenger.version == "1"
    assert challenger.tags[tags.GATE] == "passed"
    # The registered model is the refit on the freshest labelled week, not the judged model.
    assert challenger.run_id == refit.info.run_id and challenger.tags[tags.REFIT_OF] == refit.data.tags[tags.REFIT_OF]
    assert challenger.tags[tags.REFIT_WINDOW] == refit.data.tags[tags.REFIT_WINDOW]
    assert float(challenger.tags[tags.AVERAGE_PRECISION]) >= 0.3
    from fraudflow.models.candidates import load_candidate_model

    spec, model = load_candidate_model(f"models:/{registry.MODEL_NAME}@challenger")
    assert spec.name == challenger.tags[tags.CANDIDATE]
    card = Path(challenger.tags[tags.MODEL_CARD])
    assert card.exists() and card.with_suffix(".html").exists()
    text = card.read_text()
    assert "handbook: XGBoost, defaults" in text and "Known limits" in text and "fraud_detection_v1" in text
    assert "Registered model refit" in text
    # The selected parameters and their fold scores are in the card (xgboost searched, mlp given).
    assert "## Model selection" in text and "| mean fold AP |" in text
    assert any(line.startswith("| xgboost") and "| 2 |" in line for line in text.splitlines())
    # The card is the version's description (MLflow renders it) and its HTML is rendered Markdown.
    assert client.get_model_version(registry.MODEL_NAME, challenger.version).description == text
    html = card.with_suffix(".html").read_text()
    assert "<table>" in html and "<h2>Known limits</h2>" in html and "<pre>" not in html and "|---|" not in html

    # Promote it (what deploy_model will do), then train a deliberately crippled candidate.
    registry.promote_challenger(settings)
    before = registry.aliases(settings)
    assert before == {"champion": "1"}
    crippled = {"xgboost": {"n_estimators": 1}, "mlp": {"epochs": 1}}
    bad = run_dag(
        dag,
        logical_date=as_logical_date(LAST_DAY) + dt.timedelta(hours=1),
        conf={"candidate_params": crippled, "shuffle_labels": True, "reason": "gate drill"},
    )
    assert bad.state == "success", bad  # a refused model is an outcome, not a crash
    assert registry.aliases(settings) == before
    assert len(client.search_model_versions(f"name='{registry.MODEL_NAME}'")) == 1
    latest = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tags.REASON}` = 'gate drill'", max_results=1
    )[0]
    assert latest.data.tags[tags.GATE] == "failed"
    assert "min_average_precision" in latest.data.tags[tags.GATE_REASON]
    assert latest.data.tags[tags.CHAMPION_VERSION] == "1"


def test_prequential_selection_judges_folds_before_the_test_window(trained_home):
    """Each trial is a nested MLflow run with one score per fold; the folds end before the test
    window; the winner is the best mean validation AP, recorded on the parent run."""
    from fraudflow.training.prequential import select_parameters
    from fraudflow.training.training_set import build_training_set

    settings = trained_home
    training_set = build_training_set(settings, run_date=LAST_DAY, run_id="selection-test", reason="test")
    selection = select_parameters(settings, candidate="xgboost", training_set=training_set, n_folds=2, budget=3)
    assert len(selection.folds) == 2
    assert all(f.test_end < training_set.window.test_start for f in selection.folds)
    assert len(selection.trials) == 3 and selection.trials[0].params == {}
    best = max(selection.trials, key=lambda t: t.mean_average_precision)
    assert selection.best_params == best.params
    client = _client(settings)
    for trial in selection.trials:
        run = client.get_run(trial.run_id)
        assert run.data.tags["mlflow.parentRunId"] == training_set.parent_run_id
        assert {"fold0.average_precision", "fold1.average_precision", "mean_average_precision"} <= set(run.data.metrics)
        assert run.data.metrics["fold0.average_precision"] == pytest.approx(trial.fold_average_precision[0])
    artifacts = {a.path for a in client.list_artifacts(training_set.parent_run_id, "selection")}
    assert "selection/xgboost.json" in artifacts

    # The trials were fitted in two spawned workers (the default); in this process, one after
    # the other, every trial scores exactly the same.
    from sklearn.metrics import average_precision_score

    from fraudflow.training.prequential import parameter_grid
    from fraudflow.training.trials import run_trials

    assert settings.selection_workers == 2
    folder = Path(training_set.folder)
    fold_paths = [
        (
            str(folder / f"fold_{f.train_start}_{f.test_end}_train.parquet"),
            str(folder / f"fold_{f.train_start}_{f.test_end}_valid.parquet"),
        )
        for f in selection.folds
    ]
    in_process = run_trials("xgboost", parameter_grid("xgboost", 3), fold_paths, workers=1)
    # Inside a daemonic process (a Celery prefork worker), which may not start children, the
    # trials run in process with the same scores (this failed on Celery before the fallback).
    import multiprocessing

    from tests.helpers import run_trials_in_daemon

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    daemon = context.Process(
        target=run_trials_in_daemon, args=("xgboost", parameter_grid("xgboost", 3), fold_paths, queue), daemon=True
    )
    daemon.start()
    from_daemon = queue.get(timeout=300)
    daemon.join(timeout=60)
    assert daemon.exitcode == 0
    for a, b in zip(from_daemon, in_process, strict=True):
        for fa, fb in zip(a, b, strict=True):
            np.testing.assert_array_equal(fa, fb)
    for trial, scores in zip(selection.trials, in_process, strict=True):
        labels = [pd.read_parquet(valid)["TX_FRAUD"] for _, valid in fold_paths]
        assert [average_precision_score(y, s) for y, s in zip(labels, scores, strict=True)] == pytest.approx(
            trial.fold_average_precision, abs=1e-12
        )


def test_the_ensemble_is_judged_on_the_selection_folds_and_loads_as_one_model(trained_home, monkeypatch):
    """train_model with selection on (1 trial = the defaults, 1 fold): the families' stored fold
    scores are averaged and judged in a nested run; the ensemble is a candidate exactly when its
    fold AP beat each family's. Trained either way here, it logs, loads and scores as one model."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import average_precision_score

    from fraudflow.features.compute import LABEL, MODEL_INPUTS
    from fraudflow.models.candidates import CANDIDATES, Calibrated, load_candidate_model, single_threaded_boosters
    from fraudflow.training.prequential import Selection, judge_ensemble
    from fraudflow.training.train import train_candidate
    from fraudflow.training.training_set import build_training_set

    settings = trained_home
    monkeypatch.setenv("FRAUDFLOW_SELECTION_TRIALS", "1")
    monkeypatch.setenv("FRAUDFLOW_SELECTION_FOLDS", "1")
    outcome = run_dag(load_dag("train_model"), logical_date=None, conf={"reason": "ensemble test"})
    assert outcome.state == "success", outcome
    client = _client(settings)
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT)
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tags.REASON}` = 'ensemble test'", max_results=1
    )
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    (judged,) = [r for r in children if r.info.run_name == "select ensemble"]
    families = {r.data.tags.get(tags.CANDIDATE) for r in children if not r.info.run_name.startswith("select ")}
    verdict = judged.data.tags["fraudflow.selection.verdict"]
    assert ("ensemble" in families) == verdict.startswith("kept: ")

    # The judged fold AP is the AP of the mean of the two families' stored fold scores.
    stored = json.loads(Path(client.download_artifacts(parent.info.run_id, "selection/xgboost.json")).read_text())
    folder = Path(stored["fold_scores_path"]).parent
    xgb = pd.read_parquet(folder / "selection_xgboost_folds.parquet")
    mlp = pd.read_parquet(folder / "selection_mlp_folds.parquet")
    both = xgb.merge(mlp[["TRANSACTION_ID", "score"]], on="TRANSACTION_ID", suffixes=("_x", "_m"))
    assert len(both) == len(xgb) == len(mlp)
    expected = average_precision_score(both[LABEL], (both["score_x"] + both["score_m"]) / 2)
    assert judged.data.metrics["fold0.average_precision"] == pytest.approx(expected)

    # The failing case: families judged on different folds are not averaged.
    def stored_selection(family: str) -> Selection:
        path = client.download_artifacts(parent.info.run_id, f"selection/{family}.json")
        return Selection.model_validate_json(Path(path).read_text())

    shifted = stored_selection("mlp")
    shifted.folds[0] = shifted.folds[0].model_copy(
        update={"train_start": shifted.folds[0].train_start - dt.timedelta(1)}
    )
    ts = build_training_set(settings, run_date=LAST_DAY, run_id="ensemble-test", reason="test")
    with pytest.raises(ValueError, match="same prequential folds"):
        judge_ensemble(settings, training_set=ts, selections=[stored_selection("xgboost"), shifted])
    with pytest.raises(ValueError, match="two or more families"):
        judge_ensemble(settings, training_set=ts, selections=[stored_selection("xgboost")])

    # Trained and logged like any family; loaded back as one model: the calibrated mean of its members.
    run = train_candidate(settings, candidate="ensemble", training_set=ts, params={})
    spec, model = load_candidate_model(run.model_uri)
    assert spec is CANDIDATES["ensemble"] and isinstance(model, Calibrated)
    test = pd.read_parquet(ts.test_path)
    members = model.model.members
    assert set(members) == {"xgboost", "mlp"}
    # Served single-threaded like a lone XGBoost (the service pins every booster it loads).
    (booster,) = single_threaded_boosters(model.model)
    assert members["xgboost"].get_params()["n_jobs"] == 1 and booster is members["xgboost"].get_booster()
    mean = np.mean([CANDIDATES[n].predict_proba(m, test[MODEL_INPUTS]) for n, m in members.items()], axis=0)
    served = spec.predict_proba(model, test[MODEL_INPUTS])
    np.testing.assert_allclose(served, model.calibration.apply(mean), rtol=1e-6)
    logged_scores = pd.read_parquet(run.scores_path)["score"].to_numpy()
    np.testing.assert_allclose(served, logged_scores, rtol=1e-6)
    assert run.metrics.average_precision == pytest.approx(average_precision_score(test[LABEL], logged_scores))
    # The python_function view (what bentoml.mlflow.import_model and `mlflow models serve` load).
    pyfunc = mlflow.pyfunc.load_model(run.model_uri)
    rows = test[MODEL_INPUTS].head(50).astype(np.float32)  # the logged signature's dtype
    np.testing.assert_allclose(np.asarray(pyfunc.predict(rows)), mean[:50], rtol=1e-5)


def test_a_window_over_the_row_bound_trains_on_sampled_negatives_and_records_it(trained_home, monkeypatch):
    """FRAUDFLOW_TRAINING_MAX_TRAIN_ROWS below the training window's size, through the DAG: the
    window keeps every fraud and a hashed share of the rest, the refit window the same share,
    the test week stays whole; the rate is on the parent run, in the lineage and in the
    registered version's model card, and the drift reference is a uniform share of the refit
    rows (frauds not over-represented)."""
    from fraudflow.features.compute import LABEL
    from fraudflow.lineage import read_lineage
    from fraudflow.monitoring.drift import load_reference
    from fraudflow.training.refit import REFIT_FILE
    from fraudflow.training.sampling import SAMPLE_WEIGHT
    from fraudflow.training.training_set import build_training_set

    settings = trained_home
    full = build_training_set(settings, run_date=LAST_DAY, run_id="unsampled-reference", reason="test")
    assert full.sampling is None  # the default bound (1,000,000 rows) is far above this world
    monkeypatch.setenv("FRAUDFLOW_TRAINING_MAX_TRAIN_ROWS", str(full.train_rows // 3))
    monkeypatch.setenv("FRAUDFLOW_SELECTION_TRIALS", "0")
    # This test is about the record, not about beating the champion other tests registered.
    monkeypatch.setenv("FRAUDFLOW_GATE_AP_TOLERANCE", "1")
    monkeypatch.setenv("FRAUDFLOW_GATE_SLICE_TOLERANCE", "1")
    outcome = run_dag(load_dag("train_model"), conf={"candidate_params": FAST, "reason": "sampled"})
    assert outcome.state == "success", outcome

    client = _client(settings)
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT)
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{tags.REASON}` = 'sampled'", max_results=1
    )
    rate = float(parent.data.params["sampling.rate"])
    assert 0.2 < rate < 0.45 and parent.data.params["sampling.max_train_rows"] == str(full.train_rows // 3)
    assert parent.data.tags[tags.GATE] == "passed", parent.data.tags.get(tags.GATE_REASON)
    challenger = registry.version_by_alias(settings, registry.CHALLENGER)
    folder = Path(challenger.tags[tags.TRAINING_SET])
    train, test = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "test.parquet")
    assert train[LABEL].sum() == full.train_frauds and len(train) < full.train_rows / 2
    pd.testing.assert_frame_equal(test, pd.read_parquet(full.test_path))
    np.testing.assert_allclose(train.loc[train[LABEL] == 0, SAMPLE_WEIGHT], 1 / rate)

    refit = pd.read_parquet(folder / REFIT_FILE)  # the registered model: sampled at the same rate
    np.testing.assert_allclose(refit.loc[refit[LABEL] == 0, SAMPLE_WEIGHT], 1 / rate)
    reference, _ = load_reference(challenger)
    assert reference[LABEL].mean() < refit[LABEL].mean()  # frauds back to their share of the window
    assert len(reference) == pytest.approx(rate * refit[SAMPLE_WEIGHT].sum(), rel=0.2)

    built = [e for e in read_lineage(settings, stage="build_training_set") if e["wrote"].get("sampling")]
    assert built and built[-1]["wrote"]["sampling"]["rate"] == pytest.approx(rate)
    card = Path(challenger.tags[tags.MODEL_CARD]).read_text()
    assert "**negatives sampled**" in card and f"(rate {rate:.4f}" in card
    assert "the refit window was sampled at the same rate" in card and "The test window was not sampled" in card
