"""Plumbing shared by the scripts in ``benchmarks/`` (not a benchmark itself).

The scripts run as ``.venv/bin/python benchmarks/<name>.py``, so ``benchmarks/`` is on
``sys.path`` and this package imports as ``_bench``:

- ``_bench.env``: the repository's paths and a benchmark's fraudflow home (environment);
- ``_bench.output``: progress lines (stderr) and the one results-table printer, with the
  machine's conditions (cores, load, a reference loop's time, Python, key package versions);
- ``_bench.timing``: ``timed`` (median of repeats), ``Stages`` (named steps one after the
  other), percentiles;
- ``_bench.processes``: CPU of a process tree and of everyone else ("other load"),
  ``wait_quiet``;
- ``_bench.services``: PostgreSQL + Redis through ``.ci/services.sh``, ``mlflow models serve``;
- ``_bench.load``: load generation, ``hey`` at fixed rates and ``wrk`` at saturation;
- ``_bench.open_loop``: an open-loop load in its own process with every request's send time,
  for benchmarks that change the service while it is loaded (rollout, worker kill).
"""
