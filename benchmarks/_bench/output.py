"""What a benchmark prints: progress on stderr, results as Markdown tables on stdout (the
README quotes them as they are printed)."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from importlib import metadata


def log(message: str) -> None:
    """A progress line on stderr, timestamped: stdout keeps the tables alone."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def reference_seconds(repeats: int = 5) -> float:
    """The median time of a fixed pure-Python loop on this machine now: the same code's
    figures move with it (on the 2-core CI machine it ranged 0.49-0.68 s within a minute), so
    a table carries it beside the figures it qualifies."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(3_000_000):
            total += i * i
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def conditions(packages: Sequence[str] = ()) -> str:
    """The machine and software a result was measured on: cores, load average, the reference
    loop's time (:func:`reference_seconds`), Python and the versions of ``packages``."""
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    load = f", load avg {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    python = f"Python {platform.python_version()} on {platform.system()}"
    machine = f"{os.cpu_count()} cores{load}, reference loop {reference_seconds():.2f} s, {python}"
    return "; ".join([machine, *versions])


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    align: str | None = None,
    packages: Sequence[str] | None = None,
    note: str | None = None,
) -> None:
    """Print ``### title``, the conditions line when ``packages`` is given (once per run: on the
    first table), then ``rows`` as a Markdown table and ``note`` under it.

    ``align`` has one letter per column, ``l`` or ``r`` (default: the first column left, the
    others right). Cells are printed as given: format numbers before passing them.
    """
    align = align or "l" + "r" * (len(columns) - 1)
    if len(align) != len(columns):
        raise ValueError(f"align {align!r} does not match {len(columns)} columns")
    print(f"\n### {title}\n")
    if packages is not None:
        print(f"conditions: {conditions(packages)}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row {row!r} does not match the {len(columns)} columns {columns!r}")
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    if note:
        print(f"\n{note}")
