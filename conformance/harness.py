"""The harness protocol: what a subject (a backend, an adapter) implements to get the
whole conformance battery.

A harness turns one :class:`Case` (NumPy arrays plus options, generated once so the oracle
and every subject see the same bits) into the subject's output and gradients, as NumPy.
Adding a backend means writing one small harness module under ``conformance/harnesses/``
and one line in ``conformance/subjects.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from localnorm import MODES


@dataclasses.dataclass(frozen=True)
class Case:
    """One LocalNorm evaluation, as NumPy data.

    ``x`` has the dtype under test (for bfloat16, ``ml_dtypes.bfloat16``); ``gamma`` and
    ``beta`` are float64 of shape (K, C) and harnesses cast them to their parameter dtype
    (float32 for low-precision inputs). With ``groups`` set they are one (1, C) row
    shared by the ``groups`` groups along the batch axis (``shared_affine``: Ghost
    BatchNorm), and K is ``groups``. ``group`` is an int, or for ``mode="single"`` an
    int64 array of shape (N,).
    """

    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    axis: int = -1
    mode: str = "batch"
    group: Any = 0
    partition: str = "contiguous"
    eps: float = 1e-5
    groups: int | None = None

    @property
    def num_groups(self) -> int:
        return int(self.gamma.shape[0]) if self.groups is None else int(self.groups)

    @property
    def shared_affine(self) -> bool:
        """Whether gamma/beta are one row shared by the groups along the batch axis."""
        return self.groups is not None

    @property
    def num_features(self) -> int:
        return int(self.gamma.shape[1])

    @property
    def dtype(self) -> str:
        return str(self.x.dtype)

    def reference_kwargs(self) -> dict:
        kw = dict(axis=self.axis, mode=self.mode, group=self.group,
                  partition=self.partition, eps=self.eps)
        if self.shared_affine:
            kw["num_groups"] = self.num_groups
        return kw


class Harness:
    """Base class of the subjects of the conformance suite.

    Subclasses set ``name`` and ``dtypes`` and implement :meth:`forward`; those that can
    differentiate implement :meth:`vjp` and set ``grads = True``. :meth:`supports` returns
    None when the subject can run the case, or a short reason to skip it (for example a
    layer class that only takes its channels on axis 1).
    """

    name: str = "?"
    #: NumPy dtype names of ``x`` this subject is tested with.
    dtypes: tuple[str, ...] = ("float64", "float32")
    #: Whether :meth:`vjp` is implemented.
    grads: bool = False
    #: Whether per-sample group arrays in "single" mode are supported.
    group_arrays: bool = True
    #: Layer modes the subject runs (a subset of ``localnorm.MODES``).
    modes: tuple[str, ...] = ("batch", "single", "set")
    #: Partitions along the batch axis the subject runs.
    partitions: tuple[str, ...] = ("contiguous", "strided")
    #: Channel axes the subject takes (negative values count from the end, as for
    #: ``local_norm``'s ``axis``); None means any non-batch axis.
    channel_axes: tuple[int, ...] | None = None
    #: Input ranks (batch and channel axes included) the subject takes.
    ranks: tuple[int, ...] = (2, 3, 4, 5)
    #: Whether each new input signature (shape, dtype, static options) costs a
    #: compilation (jit/XLA). The strategies then draw shapes, group counts and eps from
    #: a small fixed catalog (``strategies.CATALOG``) so compilations are reused; data
    #: values, modes, partitions, groups and dtypes still vary freely.
    compiles: bool = False
    #: Whether the subject computes LocalNorm with localnorm's array-API core
    #: (:func:`localnorm.local_norm`). At realistic sizes (``test_forward_realistic``)
    #: such subjects are held to the tolerance of small sets and, in float64, to 1e-12;
    #: a framework's own kernels are held there to the tolerance model whose summation
    #: term grows with the set size (see ``tolerances.py``).
    core_statistics: bool = False
    #: At most this many Hypothesis examples per property for this subject (None: the
    #: profile's), for subjects whose every case is slow (an interpreter).
    max_examples: int | None = None

    #: The layer's constructor options in the subject's dialect, by kind (``"flag"``,
    #: ``"momentum"``, ``"num_features"``), for the battery's option rows; empty where
    #: the subject has no layer (a functional subject).
    options: dict[str, tuple[str, ...]] = {}

    @classmethod
    def unavailable(cls) -> str | None:
        """None when the subject can run here, else why not (a framework or device is
        missing). Checked once per session; the subject's tests are then skipped with
        this reason."""
        return None

    def supports(self, case: Case) -> str | None:
        if case.dtype not in self.dtypes:
            return f"dtype {case.dtype} not tested on {self.name}"
        if not self.group_arrays and not isinstance(case.group, int):
            return f"{self.name} takes int groups only"
        # Unknown modes pass: refusing them is the subject's job (error parity).
        if case.mode in MODES and case.mode not in self.modes:
            return f"mode {case.mode!r} not run on {self.name}"
        if case.partition not in self.partitions:
            return f"partition {case.partition!r} not run on {self.name}"
        if case.x.ndim not in self.ranks:
            return f"rank {case.x.ndim} not taken by {self.name}"
        if self.channel_axes is not None:
            ndim = case.x.ndim
            wanted = {a % ndim for a in self.channel_axes if -ndim <= a < ndim}
            if case.axis % ndim not in wanted:
                return f"channel axis {case.axis} (rank {ndim}) not taken by {self.name}"
        return None

    def forward(self, case: Case) -> np.ndarray:
        """The subject's output for the case, as a NumPy array of x's dtype."""
        raise NotImplementedError

    def build_layer(self, **options: Any) -> Any:
        """A layer of C=3 channels and K=2 groups along the batch axis built with
        ``options`` (names from :attr:`options`), as a user would build it."""
        raise NotImplementedError

    def vjp(self, case: Case, cotangent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients ``(dx, dgamma, dbeta)`` of ``sum(forward(case) * cotangent)``."""
        raise NotImplementedError
