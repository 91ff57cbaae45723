"""Model cards: what a registered version is, what it was trained on, how good, and its limits.

Rendered from the gate decision and training set (no second source of truth) as Markdown and
HTML, kept beside the training set and logged to the version's MLflow run.
"""

from __future__ import annotations

from jinja2 import Environment

from fraudflow.registry import VersionRef
from fraudflow.settings import Settings

# Published test results, Fraud Detection Handbook (AUC ROC, AP, CP@100).
HANDBOOK_BASELINES = {
    "XGBoost, defaults (baseline split)": (0.862, 0.639, 0.273),
    "XGBoost, prequential selection": (0.869, 0.687, 0.303),
    "Random forest, prequential selection": (0.870, 0.678, 0.299),
    "Feed-forward NN, prequential selection": (0.876, 0.675, 0.303),
    "Logistic regression, baseline split": (0.871, 0.606, 0.291),
}

KNOWN_LIMITS = [
    "Trained and tested on simulated transactions (Fraud Detection Handbook design); real card data differs.",
    "Served window features are computed per request from the card's and terminal's history with the "
    "offline definition; two workers scoring one card within milliseconds can drop one live entry until "
    "the next daily batch.",
    "Labels are assumed complete after 7 days; later chargebacks are not reflected.",
    "TX_FRAUD_SCENARIO is simulation ground truth and never a model input (used for slices only).",
]

_MD = """# Model card: {{ v.name }} v{{ v.version }}

| | |
|---|---|
| family | {{ d.best.candidate }} |
| registered as | alias `challenger` (promotion to `champion` is the deployment DAG's job) |
| why trained | {{ reason or "scheduled" }} |
{% if t.trigger.failed_checks %}| failed checks | {{ t.trigger.failed_checks|join("; ") }} |
{% endif %}{% if t.trigger.report_path %}| drift report | `{{ t.trigger.report_path }}` |
{% endif %}| gate | **{{ "passed" if d.passed else "failed" }}**: {{ d.reason }} |
| MLflow run | {% if refit %}`{{ refit.run_id }}` (refit of the judged run `{{ d.best.run_id }}`){% else %}`{{ d.best.run_id }}`{% endif %} (parent `{{ t.parent_run_id }}`) |
| threshold (F1-optimal on calibrated out-of-sample scores of the training window, not the test window) | {{ "%.4f"|format(d.best.threshold) }}{% if refit %} (of the judged model){% endif %} |
| calibration | {% if d.best.calibration %}Platt: p = sigmoid({{ "%.3f"|format(d.best.calibration.slope) }} logit(score) {{ "%+.3f"|format(d.best.calibration.intercept) }}), fit on {{ d.best.calibration.fitted_rows }} out-of-sample training transactions ({{ d.best.calibration.fitted_frauds }} frauds){% else %}none: {{ d.best.validation.reason if d.best.validation else "not fitted" }}{% endif %} |

## Data
- Training window: {{ t.window.train_start }} to {{ t.window.train_end }} ({{ t.train_rows }} transactions, {{ t.train_frauds }} frauds)
- Label-delay gap: {{ t.window.delay_days }} days
- Training sample: {% if t.sampling %}**negatives sampled**, the window had more than {{ t.sampling.max_train_rows }} transactions: {{ t.sampling.describe() }}. The fit saw the sample unweighted; the calibration, threshold and validation Brier/ECE weigh each sampled transaction by {{ "%.3f"|format(t.sampling.weight) }}{% if refit %}, and the refit window was sampled at the same rate{% endif %}. The test window was not sampled.{% else %}every transaction of the window (no sampling).{% endif %}
{% if refit %}- **Registered model refit** on the freshest labelled days {{ refit.window_start }} to {{ refit.window_end }} ({{ refit.rows }} transactions, {{ refit.frauds }} frauds) with the judged model's family and parameters; the metrics, slices and gate checks below are the judged model's (trained on the training window above), since the refit has no held-out week of its own.
{% endif %}
- Test window: {{ t.window.test_start }} to {{ t.window.test_end }} ({{ t.test_rows }} transactions, {{ t.test_frauds }} frauds; {{ t.removed_known_compromised }} transactions of already-known compromised cards removed)
- Lake partitions: {{ t.partitions|length }} (`{{ t.partitions[0] if t.partitions else "-" }}` .. `{{ t.partitions[-1] if t.partitions else "-" }}`), admitted by GX validations {{ t.validation_ids|length }}
- Data fingerprint: `{{ t.fingerprint[:16] }}`
- Features: Feast feature service `{{ t.feature_service }}`: {{ t.features|join(", ") }}

## Metrics on the test window
| model | AUC ROC | AP | CP@100 | Brier | ECE |
|---|---:|---:|---:|---:|---:|
{% for c in d.candidates %}| **{{ c.candidate }}** (this run){% if c.candidate == d.best.candidate %} (registered){% endif %} | {{ "%.3f"|format(c.metrics.auc_roc) }} | {{ "%.3f"|format(c.metrics.average_precision) }} | {{ "%.3f"|format(c.metrics.card_precision_at_100) }} | {{ "%.5f"|format(c.test_brier) if c.test_brier is not none else "-" }} | {{ "%.5f"|format(c.test_ece) if c.test_ece is not none else "-" }} |
{% endfor %}{% if d.champion_metrics %}| champion v{{ d.champion_version }} (same window) | {{ "%.3f"|format(d.champion_metrics.auc_roc) }} | {{ "%.3f"|format(d.champion_metrics.average_precision) }} | {{ "%.3f"|format(d.champion_metrics.card_precision_at_100) }} | | |
{% endif %}{% for name, (auc, ap, cp) in baselines.items() %}| handbook: {{ name }} | {{ auc }} | {{ ap }} | {{ cp }} | | |
{% endfor %}
Brier and ECE (expected calibration error, 10 bins) are of the served probabilities, calibrated
on out-of-sample scores of the training window; the ranking metrics are unchanged by calibration.
{% if d.best.validation and d.best.validation.brier_raw is not none %}On the out-of-sample training scores: Brier {{ "%.5f"|format(d.best.validation.brier_raw) }} raw, {{ "%.5f"|format(d.best.validation.brier_calibrated) }} calibrated; ECE {{ "%.5f"|format(d.best.validation.ece_raw) }} raw, {{ "%.5f"|format(d.best.validation.ece_calibrated) }} calibrated.
{% endif %}
## Model selection
{% set sel = d.candidates|selectattr("selection")|list %}{% if sel %}Prequential validation on folds that end before the test window (train week, {{ t.window.delay_days }}-day label-delay gap, validation week, moved back a week per fold); the test window was never read.

| candidate | parameters used | trials | mean fold AP | fold APs | search (s) |
|---|---|---:|---:|---|---:|
{% for c in sel %}| {{ c.candidate }}{% if c.candidate == d.best.candidate %} (registered){% endif %} | `{{ c.params or "defaults" }}` | {{ c.selection.trials|length }} | {{ "%.4f"|format(c.selection.best.mean_average_precision) }} | {{ c.selection.best.fold_average_precision|map("round", 4)|join(", ") }} | {{ "%.1f"|format(c.selection.seconds) }} |
{% endfor %}{% if d.candidates|selectattr("candidate", "equalto", "ensemble")|list %}The ensemble (mean of the families' probabilities) was trained because its mean fold AP beat each family's.
{% elif sel|length > 1 %}No ensemble: its mean fold AP did not beat the best family's (or it was not judged).
{% endif %}{% else %}No selection in this run: {% for c in d.candidates %}{{ c.candidate }} `{{ c.params or "defaults" }}`{{ "; " if not loop.last }}{% endfor %} (given, or `FRAUDFLOW_SELECTION_TRIALS=0`).
{% endif %}
## Slices (challenger{% if "champion" in d.slices %} vs champion{% endif %})
| slice | metric | challenger | champion | n | frauds |
|---|---|---:|---:|---:|---:|
{% for key, s in d.slices.challenger.items() %}| {{ key }} | {{ s.metric }} | {{ "%.3f"|format(s.value) }} | {% if "champion" in d.slices and key in d.slices.champion %}{{ "%.3f"|format(d.slices.champion[key].value) }}{% else %}-{% endif %} | {{ s.n }} | {{ s.n_frauds }} |
{% endfor %}
## Gate checks
| check | passed | detail |
|---|---|---|
{% for c in d.verdict.checks %}| {{ c.name }} | {{ "yes" if c.passed else "**no**" }} | {{ c.detail }} |
{% endfor %}
## Known limits
{% for l in limits %}- {{ l }}
{% endfor %}"""

_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>{{ title }}</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2em .6em}code{background:#f4f4f4}</style></head>
<body>{{ body }}</body></html>"""


def markdown_to_html(markdown: str) -> str:
    """CommonMark with GitHub tables (markdown-it-py, the renderer rich and MLflow's stack ship);
    raw HTML in the card is escaped, not passed through."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)


def render_model_card(*, version: VersionRef, decision, training_set, reason: str, refit=None) -> str:
    env = Environment(autoescape=False, trim_blocks=False)
    return env.from_string(_MD).render(
        v=version,
        d=decision,
        t=training_set,
        reason=reason,
        refit=refit,
        baselines=HANDBOOK_BASELINES,
        limits=KNOWN_LIMITS,
    )


def write_model_card(
    settings: Settings, *, version: VersionRef, decision, training_set, reason: str, refit=None
) -> str:
    """Write ``model_card.md`` and ``model_card.html`` (rendered) under ``model_cards/``, log both
    to the version's run and make the Markdown the version's description, so MLflow's model page
    renders the card itself; return the Markdown path."""
    import mlflow
    from jinja2 import Environment as _Env

    from fraudflow.tracking import configure_mlflow

    markdown = render_model_card(
        version=version, decision=decision, training_set=training_set, reason=reason, refit=refit
    )
    folder = settings.root / "model_cards"
    folder.mkdir(parents=True, exist_ok=True)
    md_path = folder / f"{version.name}-v{version.version}.md"
    md_path.write_text(markdown)
    from markupsafe import Markup

    html = (
        _Env(autoescape=True)
        .from_string(_HTML)
        .render(title=f"{version.name} v{version.version}", body=Markup(markdown_to_html(markdown)))
    )
    md_path.with_suffix(".html").write_text(html)
    configure_mlflow(settings)
    with mlflow.start_run(run_id=decision.best.run_id):
        mlflow.log_artifact(str(md_path), "model_card")
        mlflow.log_artifact(str(md_path.with_suffix(".html")), "model_card")
    mlflow.MlflowClient().update_model_version(version.name, version.version, description=markdown)
    return str(md_path)
