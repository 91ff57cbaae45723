"""GX's ``Expectation.configuration``, built once per expectation object within a checkpoint run.

Why: GX 1.24.1's ``Expectation.configuration`` is a property that rebuilds an
``ExpectationConfiguration`` on every access (a pydantic ``dict()`` of the expectation, a regex
over its class name, a new object), and one validation asks for it ~90 times per expectation:
while building each expectation's metric graph, for its runtime, success and domain kwargs,
and again while judging the metrics. For the landing gate's 26 expectations that was ~30% of a
day's ~0.45 s ``validate_batch``, more than computing the metrics over the day's rows.

Inside :func:`configurations_built_once`, the first access's configuration is kept for that
expectation object, on that thread, until the object is assigned to or the block ends; outside
it GX is untouched. GX creates the expectation objects a run uses and drops them after it, and
no GX code mutates a configuration it got from the property (the validator deep-copies before
it adds the batch id), so the results are the same objects GX would build, built fewer times.
``tests/test_validation_gate.py`` shows the rebuilds and that the gate's results are equal with and
without the cache. The patch is tied to the pinned GX version: any other version runs GX as is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PATCHED_GX_VERSION = "1.24.1"

_state = threading.local()
_installed = False


def _cache() -> dict[int, tuple[Any, Any]] | None:
    return getattr(_state, "cache", None)


def _install() -> bool:
    """Wrap the property and ``__setattr__`` once per process; False if GX is not the pinned
    version (then the block below changes nothing)."""
    global _installed
    import great_expectations
    from great_expectations.expectations.expectation import Expectation

    if great_expectations.__version__ != PATCHED_GX_VERSION:
        return False
    if _installed:
        return True
    build = Expectation.configuration.fget
    assign = Expectation.__setattr__

    def configuration(self):
        cache = _cache()
        if cache is None:
            return build(self)
        hit = cache.get(id(self))
        if hit is None or hit[0] is not self:
            hit = cache[id(self)] = (self, build(self))  # holding the object keeps its id unique
        return hit[1]

    def __setattr__(self, name, value):
        cache = _cache()
        if cache:
            cache.pop(id(self), None)
        assign(self, name, value)

    configuration.__doc__ = build.__doc__
    Expectation.configuration = property(configuration)
    Expectation.__setattr__ = __setattr__
    _installed = True
    return True


@contextmanager
def configurations_built_once(enabled: bool = True) -> Iterator[bool]:
    """Within the block, each expectation object's configuration is built once (see the module
    docstring); yields whether the cache is active. Blocks nest; the outermost one clears it."""
    if not enabled or not _install():
        yield False
        return
    if _cache() is not None:
        yield True
        return
    _state.cache = {}
    try:
        yield True
    finally:
        _state.cache = None
