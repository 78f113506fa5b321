"""Hypothesis strategies for the conformance suite: :class:`~conformance.harness.Case`
objects drawn in NumPy (``hypothesis.extra.numpy``), so the reference and every subject
see exactly the same bits.

Two families of input:

- :func:`cases` with ``conditioning="well"``: a smooth, spread pattern plus drawn noise,
  scaled and offset; every statistics set has a variance well above eps (cases with
  ``tolerances.amplification(case) > WELL_AMP_MAX`` are filtered out), so float64
  agrees with the reference to 1e-12;
- ``conditioning="near-constant"``: a large offset plus a tiny (possibly zero) spread,
  where eps dominates the variance and rounding is amplified (see tolerances.py).

Shapes are small (the suite runs hundreds of examples per property on 2 cores) but cover
ranks 2..5, any channel axis (given positive or negative), 1..4 groups, ragged batches
(N not a multiple of K) and both partitions. gamma and beta are drawn exactly
representable in float32 (and may be negative or zero, never subnormal).
"""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
from hypothesis import assume
from hypothesis.extra import numpy as hnp

from localnorm import MODES, PARTITIONS
from conformance import tolerances
from conformance.harness import Case

#: Cases of the "well" family whose amplification (tolerances.amplification) exceeds
#: this are rejected: a set whose values nearly coincide is not well-conditioned.
WELL_AMP_MAX = 64.0

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")

_EPS = st.sampled_from([1e-5, 1e-5, 1e-3, 0.1])


def as_dtype(x64: np.ndarray, dtype: str) -> np.ndarray:
    """Cast float64 data to the dtype under test (bfloat16 through ml_dtypes)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return x64.astype(ml_dtypes.bfloat16)
    return x64.astype(dtype)


def params(k: int, c: int):
    """gamma or beta of shape (K, C), float64 values exact in float32."""
    return hnp.arrays(np.float64, (k, c),
                      elements=st.floats(-2, 2, width=32, allow_subnormal=False))


@st.composite
def shapes(draw, *, mode: str, num_groups: int, ranks=(2, 3, 4, 5), max_batch_extra: int = 5,
           channel_axes=None):
    """(shape, axis) for a mode: valid statistics (>= 2 values per channel per set).
    ``channel_axes`` (as ``Harness.channel_axes``) restricts the channel axis."""
    ranks = [r for r in ranks if r >= 3] if mode == "single" else list(ranks)
    if channel_axes is not None:
        ranks = [r for r in ranks if any(-r < a < r and a % r for a in channel_axes)]
    rank = draw(st.sampled_from(ranks))
    if channel_axes is not None:
        declared = draw(st.sampled_from([a for a in channel_axes if -rank < a < rank and a % rank]))
        axis = declared % rank
    else:
        declared, axis = None, draw(st.integers(1, rank - 1))
    c = draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 3), min_size=rank - 2, max_size=rank - 2))
    if mode == "single" and int(np.prod(spatial)) < 2:
        spatial[draw(st.integers(0, len(spatial) - 1))] = 2
    size = int(np.prod(spatial))
    k = num_groups
    if mode == "batch":
        low = k if size >= 2 else 2 * k
    elif mode == "set":
        low = 1 if size >= 2 else 2
    else:
        low = 1
    n = draw(st.integers(low, low + max_batch_extra))
    dims = list(spatial)
    dims.insert(axis - 1, c)
    shape = (n, *dims)
    if declared is not None:
        return shape, declared
    if draw(st.booleans()):
        axis -= rank  # the same axis, counted from the end
    return shape, axis


#: Shapes and channel axes for subjects that compile per signature (Harness.compiles):
#: ``(shape, axis)``, every rank 2..5, channels first and last, ragged and even batches.
CATALOG: tuple[tuple[tuple[int, ...], int], ...] = (
    ((8, 3), 1),
    ((7, 2), -1),
    ((6, 3, 2), 1),
    ((7, 4, 3), -1),
    ((6, 2, 3, 2), 1),
    ((5, 3, 2, 2), -1),
    ((6, 2, 1, 2, 2), 2),
    ((4, 2, 2, 2, 3), -1),
)
#: Group counts and eps drawn for compiling subjects.
CATALOG_GROUPS = (1, 2, 3)
CATALOG_EPS = (1e-5, 1e-3)


def _feasible(shape: tuple[int, ...], axis: int, mode: str, k: int) -> bool:
    spatial = int(np.prod([s for a, s in enumerate(shape) if a not in (0, axis % len(shape))]))
    n = shape[0]
    if mode == "single":
        return spatial >= 2
    if mode == "set":
        return n * spatial >= 2
    return n >= k and (n // k) * spatial >= 2


@st.composite
def catalog_shapes(draw, *, mode: str, ranks=(2, 3, 4, 5), groups=(1, 4), channel_axes=None):
    """(shape, axis, K) from :data:`CATALOG` and :data:`CATALOG_GROUPS`; with
    ``channel_axes``, catalog shapes are re-read with each declared channel axis."""
    catalog = CATALOG if channel_axes is None else tuple(
        (shape, a) for shape, _ in CATALOG for a in channel_axes
        if -len(shape) < a < len(shape) and a % len(shape))
    options = [
        (shape, axis, k)
        for shape, axis in catalog
        if len(shape) in ranks
        for k in CATALOG_GROUPS
        if groups[0] <= k <= groups[1] and _feasible(shape, axis, mode, k)
    ]
    return draw(st.sampled_from(options))


@st.composite
def cases(
    draw,
    *,
    dtypes=ALL_DTYPES,
    modes=MODES,
    partitions=PARTITIONS,
    ranks=(2, 3, 4, 5),
    groups=(1, 4),
    conditioning: str = "well",
    group_arrays: bool = True,
    catalog: bool = False,
    channel_axes=None,
) -> Case:
    """A valid :class:`Case` (the reference accepts it).

    Parameters
    ----------
    dtypes, modes, partitions, ranks
        What to draw from (intersect with the subject's declarations first).
    groups : (int, int)
        Range of K, the number of groups along the batch axis.
    conditioning : {"well", "near-constant"}
        The input family (see the module docstring).
    group_arrays : bool
        Whether "single" mode may get a per-sample group array.
    catalog : bool
        Draw shapes, K and eps from :data:`CATALOG` (for subjects that compile per
        input signature).
    channel_axes : tuple of int, optional
        Only these channel axes (as declared by ``Harness.channel_axes``); default any.
    """
    dtype = draw(st.sampled_from(list(dtypes)))
    mode = draw(st.sampled_from(list(modes)))
    partition = draw(st.sampled_from(list(partitions)))
    if catalog:
        shape, axis, k = draw(catalog_shapes(mode=mode, ranks=ranks, groups=groups,
                                             channel_axes=channel_axes))
    else:
        k = draw(st.integers(*groups))
        shape, axis = draw(shapes(mode=mode, num_groups=k, ranks=ranks,
                                  channel_axes=channel_axes))
    size = int(np.prod(shape))
    if conditioning == "well":
        # Golden-angle samples of a sine: all distinct and spread in every subset.
        base = np.sin(np.arange(size) * 2.399963229728653 + 0.5).reshape(shape)
        noise = draw(hnp.arrays(np.float64, shape, elements=st.floats(-0.25, 0.25, width=32)))
        scale = draw(st.sampled_from([1.0, 0.25, 4.0, 1e-2, 1e2]))
        offset = draw(st.floats(-4, 4, width=32))
        x = scale * (base + noise) + offset * max(scale, 1.0)
    elif conditioning == "near-constant":
        offset = draw(st.floats(-100, 100, width=32))
        spread = draw(st.sampled_from([0.0, 1e-7, 1e-5, 1e-3, 1e-2]))
        noise = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1, 1, width=32)))
        x = offset + spread * max(abs(offset), 1.0) * noise
    else:
        raise ValueError(f"conditioning must be 'well' or 'near-constant', got {conditioning!r}")
    x = as_dtype(x, dtype)
    group: object = 0
    if mode != "batch":
        if mode == "single" and group_arrays and draw(st.booleans()):
            group = draw(hnp.arrays(np.int64, (shape[0],), elements=st.integers(0, k - 1)))
        else:
            group = draw(st.integers(0, k - 1))
    c = shape[axis]
    case = Case(
        x=x,
        gamma=draw(params(k, c)),
        beta=draw(params(k, c)),
        axis=axis,
        mode=mode,
        group=group,
        partition=partition,
        eps=draw(st.sampled_from(CATALOG_EPS) if catalog else _EPS),
    )
    if conditioning == "well":
        assume(np.all(np.isfinite(tolerances.x64(x))))
        assume(float(tolerances.amplification(case).max()) <= WELL_AMP_MAX)
    return case


def for_subject(harness, **kwargs):
    """:func:`cases` restricted to what a harness declares it supports; cases it still
    refuses (:meth:`Harness.supports`) are filtered out."""
    kw = dict(
        dtypes=tuple(d for d in kwargs.pop("dtypes", ALL_DTYPES) if d in harness.dtypes),
        modes=tuple(m for m in kwargs.pop("modes", MODES) if m in harness.modes),
        partitions=tuple(p for p in kwargs.pop("partitions", PARTITIONS)
                         if p in harness.partitions),
        ranks=tuple(r for r in kwargs.pop("ranks", (2, 3, 4, 5)) if r in harness.ranks),
        group_arrays=harness.group_arrays and kwargs.pop("group_arrays", True),
        catalog=harness.compiles,
        channel_axes=harness.channel_axes,
    )
    kw.update(kwargs)
    return cases(**kw).filter(lambda case: harness.supports(case) is None)
