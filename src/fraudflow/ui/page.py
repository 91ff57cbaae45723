"""The fraudflow page: one HTML document (no build step, no external assets) over the overview.

Rendered server-side with Jinja2 (autoescaped) so it works inside the Airflow UI's iframe and
from a plain link alike; every section has an ``id`` the task links jump to.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fraudflow</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#1d2430;font-size:14px}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.3em 0}td,th{border:1px solid #d6d9e0;padding:.25em .55em;text-align:left;
vertical-align:top}th{background:#f2f4f8}.ok{color:#126b2d;font-weight:600}.bad{color:#b3261e;font-weight:600}
.muted{color:#667}.pill{display:inline-block;border-radius:.8em;padding:0 .55em;background:#e8eefc;margin-right:.2em}
code{background:#f4f5f7;padding:0 .2em}small{color:#667}
</style></head><body>
<h1>fraudflow</h1>
<div class="muted">home <code>{{ o.home }}</code> &middot; signed in as {{ user }}</div>

<h2 id="serving">Serving now</h2>
{% set st = o.serving.state %}
<table><tr><th>champion</th><th>challenger</th><th>mode</th><th>canary share</th><th>revision</th><th>service</th>
<th>why</th></tr>
<tr><td>{{ "v" ~ st.champion if st.champion else "-" }}</td><td>{{ "v" ~ st.challenger if st.challenger else "-" }}</td>
<td>{{ st.mode }}</td><td>{{ "%.0f%%"|format(100 * st.canary_share) if st.mode == "canary" else "-" }}</td>
<td>{{ st.revision }}</td>
<td>{% if o.serving.health.up %}<span class="ok">up</span>{% else %}<span class="bad">down</span>{% endif %}
<small>{{ o.serving.url }}</small></td><td>{{ st.reason }}</td></tr></table>

<h2 id="versions">Model versions</h2>
{% if not o.versions %}<p class="muted">no registered version yet</p>{% else %}
<table><tr><th>version</th><th>aliases</th><th>family</th><th>why trained</th><th>gate</th><th>AP / AUC / CP@100</th>
<th>rollout</th><th>approval</th><th>evidence</th></tr>
{% for v in o.versions %}<tr id="v{{ v.version }}"><td>v{{ v.version }}</td>
<td>{% for a in v.aliases %}<span class="pill">{{ a }}</span>{% endfor %}</td><td>{{ v.family or "-" }}</td>
<td>{{ v.reason }}{% if v.failed_checks %}<br><small>{{ v.failed_checks }}</small>{% endif %}</td>
<td><span class="{{ 'ok' if v.gate == 'passed' else 'bad' }}">{{ v.gate or "-" }}</span>
<br><small>{{ v.gate_reason }}</small>{% if v.gate_checks %} <a href="{{ v.gate_checks }}">checks</a>{% endif %}</td>
<td>{{ v.metrics["AP"] or "-" }} / {{ v.metrics["AUC ROC"] or "-" }} / {{ v.metrics["CP@100"] or "-" }}</td>
<td>{{ v.rollout or "-" }}{% if v.rollout_reason %}<br><small>{{ v.rollout_reason }}</small>{% endif %}</td>
<td>{{ v.approval or "-" }}{% if v.approved_by and v.approved_by != "-" %} by {{ v.approved_by }}{% endif %}</td>
<td>{% if v.model_card %}<a href="{{ v.model_card }}">model card</a>{% endif %}
{% if v.mlflow_run %} &middot; <a href="{{ v.mlflow_run }}" target="_blank">MLflow run</a>{% endif %}</td></tr>
{% endfor %}</table>{% endif %}

<h2 id="decisions">Rollout decisions</h2>
{% if not o.decisions %}<p class="muted">no rollout yet</p>{% else %}
<table><tr><th>at</th><th>stage</th><th>version</th><th>verdict</th><th>checks</th></tr>
{% for d in o.decisions %}<tr id="decision-{{ d.revision }}-{{ d.stage }}"><td><small>{{ d.at[:19] }}</small></td>
{% set dv = d.version or d.challenger %}<td>{{ d.stage }}</td><td>{{ "v" ~ dv if dv else "-" }}</td>
<td>{% if d.check %}<span class="{{ 'ok' if d.check.passed else 'bad' }}">{{ "passed" if d.check.passed else "failed" }}</span>
<br><small>{{ d.check.reason }}</small>{% else %}{{ d.reason or d.answer or "" }}{% if d.by %} ({{ d.by }}){% endif %}{% endif %}</td>
<td>{% if d.check and d.check.checks %}{% for name, c in d.check.checks.items() %}<span class="{{ 'ok' if c.passed else 'bad' }}">
{{ name }}</span> <small>{% for k, val in c.items() if k not in ("passed", "name") %}{{ k }} {{ val }} {% endfor %}</small><br>{% endfor %}{% endif %}</td></tr>
{% endfor %}</table>{% endif %}

<h2 id="monitoring">Monitoring: drift checks</h2>
{% if not o.monitoring %}<p class="muted">no monitoring run yet</p>{% else %}
<table><tr><th>day judged</th><th>champion</th><th>verdict</th><th>checks</th><th>Evidently reports</th></tr>
{% for m in o.monitoring %}<tr id="drift-{{ m.as_of }}"><td>{{ m.as_of }}</td><td>v{{ m.champion_version }}</td>
<td><span class="{{ 'ok' if m.passed else 'bad' }}">{{ "passed" if m.passed else "failed: retraining" }}</span></td>
<td>{% for name, c in m.checks.items() %}<span class="{{ 'ok' if c.passed else 'bad' }}">{{ name }}</span>
<small>{{ c.reason }}</small><br>{% endfor %}</td>
<td>{% if m.input_report %}<a href="{{ m.input_report }}">input drift</a>{% endif %}
{% if m.prediction_report %} &middot; <a href="{{ m.prediction_report }}">prediction drift</a>{% endif %}</td></tr>
{% endfor %}</table>{% endif %}

<h2 id="data">Data</h2>
<p>{{ o.data.published_count }} published days{% if o.data.published %}, newest {{ o.data.published[0] }}{% endif %}
{% if o.data.data_docs_index %} &middot; <a href="{{ o.data.data_docs_index }}">GX Data Docs</a>{% endif %}</p>
{% if o.data.quarantined %}<table><tr><th>quarantined day</th><th>file</th><th>stage</th><th>reason</th><th>reports</th></tr>
{% for q in o.data.quarantined %}<tr id="quarantine-{{ q.day }}"><td>{{ q.day }}</td><td><code>{{ q.file }}</code></td>
<td>{{ q.stage }}</td><td><small>{{ q.summary }}</small></td>
<td>{% if q.reason_file %}<a href="{{ q.reason_file }}">reason.json</a>{% endif %}
{% for u in q.data_docs %} &middot; <a href="{{ u }}">Data Docs</a>{% endfor %}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">no quarantined day</p>{% endif %}

<h2 id="alerts">Alerts</h2>
{% if not o.alerts %}<p class="muted">no alert yet</p>{% else %}
<table><tr><th>at</th><th>tier</th><th>check</th><th>summary</th></tr>
{% for a in o.alerts %}<tr><td><small>{{ (a.raised_at or "")[:19] }}</small></td><td>{{ a.tier }}</td>
<td>{{ a.check }}</td><td><small>{{ a.summary }}</small></td></tr>{% endfor %}</table>{% endif %}
</body></html>"""


def render_page(overview: dict[str, Any], *, user: str) -> str:
    return Environment(autoescape=True).from_string(_PAGE).render(o=overview, user=user)
