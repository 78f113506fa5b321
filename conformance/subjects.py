"""The registry of conformance subjects: name -> ``"module:Class"``, imported lazily.

A subject whose module or framework cannot be imported (or whose
:meth:`~conformance.harness.Harness.unavailable` gives a reason, e.g. no CUDA device) is
reported as skipped with that reason, never as an error. Adding a backend is one harness
module under ``conformance/harnesses/`` plus one line in :data:`SUBJECTS`.

Select subjects with ``pytest conformance --subjects=numpy,torch`` or the environment
variable ``LOCALNORM_SUBJECTS``; by default every registered subject is selected and
those that cannot run here are skipped.
"""

from __future__ import annotations

import functools
import importlib
import os

from .harness import Harness

#: Registered subjects, in the order they are reported.
SUBJECTS: dict[str, str] = {
    "numpy": ".harnesses.arrayapi:NumpyHarness",
    "strict": ".harnesses.arrayapi:StrictHarness",
    "torch-array": ".harnesses.arrayapi:TorchArrayHarness",
    "jax-array": ".harnesses.arrayapi:JaxArrayHarness",
    "torch": ".harnesses.torch_layers:TorchLayerHarness",
    "torch-cuda": ".harnesses.torch_layers:TorchLayerCudaHarness",
    "torch-triton": ".harnesses.torch_layers:TorchTritonHarness",
    "keras": ".harnesses.keras_layer:KerasHarness",
    "flax": ".harnesses.flax_nnx:FlaxNNXHarness",
    "flax-linen": ".harnesses.flax_nnx:FlaxLinenHarness",
}

#: Loadable by :func:`load` (e.g. for repro) but never selected: the oracle itself.
INTERNAL: dict[str, str] = {
    "reference": ".harnesses.reference:ReferenceHarness",
}

#: Environment variable selecting subjects (comma-separated), like ``--subjects``.
ENV_VAR = "LOCALNORM_SUBJECTS"


class SubjectUnavailable(Exception):
    """The subject cannot run in this environment; ``str(exc)`` says why."""


def parse(spec: str | None) -> list[str]:
    """Subject names from a ``"a,b"`` selection; None or empty selects all registered.

    Unknown names raise ``ValueError`` naming the registered ones (a typo must not
    silently select nothing).
    """
    if not spec or not spec.strip():
        return list(SUBJECTS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUBJECTS]
    if unknown:
        raise ValueError(
            f"Unknown conformance subject(s) {unknown}. Expected names from "
            f"{list(SUBJECTS)}. Received: --subjects={spec!r}. Fix: pick registered "
            "names, or register the new harness in conformance/subjects.py."
        )
    return names


def selected(option: str | None = None) -> list[str]:
    """The subjects selected by the ``--subjects`` option, else by ``LOCALNORM_SUBJECTS``."""
    return parse(option if option else os.environ.get(ENV_VAR))


@functools.cache
def load(name: str) -> Harness:
    """The harness instance of a registered subject (one per process).

    Raises
    ------
    KeyError
        If ``name`` is not registered.
    SubjectUnavailable
        If its module, framework or device is missing here.
    """
    target = SUBJECTS[name] if name in SUBJECTS else INTERNAL[name]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name, __package__)
    except ImportError as exc:
        raise SubjectUnavailable(f"{name}: cannot import {module_name} ({exc})") from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError as exc:
        raise SubjectUnavailable(f"{name}: {module_name} has no {class_name} yet") from exc
    reason = cls.unavailable()
    if reason:
        raise SubjectUnavailable(f"{name}: {reason}")
    harness = cls()
    harness.name = name
    return harness


def available(names: list[str] | None = None) -> dict[str, str | None]:
    """For each subject, None when it can run here, else why it cannot."""
    out: dict[str, str | None] = {}
    for name in names if names is not None else list(SUBJECTS):
        try:
            load(name)
            out[name] = None
        except SubjectUnavailable as exc:
            out[name] = str(exc)
    return out
