"""Hypothesis profiles of the suite, selected by the environment variable
``HYPOTHESIS_PROFILE`` (default ``dev``):

- ``ci``: derandomized (the same examples on every run), 200 examples per property, no
  deadline (2-core CI machines are noisy), no too_slow health check, no example database;
- ``dev``: 25 examples, randomized, for quick local runs;
- ``thorough``: 1000 examples, randomized, for a longer search on a user's machine or GPU
  (``localnorm conformance --profile thorough``).

A subject may cap the examples of its properties (``Harness.max_examples``, applied by
:func:`capped` in the ``harness`` fixture): the Triton interpreter's subject does.
"""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)

#: The profile loaded for this process.
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)


@contextlib.contextmanager
def capped(max_examples: int | None):
    """The loaded profile with at most ``max_examples`` examples per property while the
    block runs (a subject's ``Harness.max_examples``); None changes nothing."""
    if max_examples is None:
        yield
        return
    base = settings.get_profile(PROFILE)
    name = f"{PROFILE}-max{max_examples}"
    settings.register_profile(name, base, max_examples=min(max_examples, base.max_examples))
    settings.load_profile(name)
    try:
        yield
    finally:
        settings.load_profile(PROFILE)
