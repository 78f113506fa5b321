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

Shapes are small by default (the suite runs hundreds of examples per property on 2
cores) but cover ranks 2..5, any channel axis (given positive or negative), 1..4 groups,
ragged batches (N not a multiple of K) and both partitions; ``ragged=True`` forces ragged
batches and ``max_side``/``max_batch_extra`` draw larger sets. gamma and beta are drawn
exactly representable in float32 (and may be negative or zero, never subnormal).

Small sets hide what matters at realistic sizes (rounding that grows with the number of
values summed): :data:`REALISTIC` is a fixed catalog of full-size inputs (up to 65536
values per channel and statistics set, both layouts, even and ragged batches) with
seeded data, built for a subject by :func:`realistic_case`.
"""

from __future__ import annotations

import dataclasses
import zlib

import hypothesis.strategies as st
import numpy as np
from hypothesis import assume
from hypothesis.extra import numpy as hnp

from localnorm import MODES, PARTITIONS
from . import tolerances
from .harness import Case

#: Cases of the "well" family whose amplification (tolerances.amplification) exceeds
#: this are rejected: a set whose values nearly coincide is not well-conditioned.
WELL_AMP_MAX = 64.0

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")

_EPS = st.sampled_from([1e-5, 1e-5, 1e-3, 0.1])

#: Inputs with more elements than this take their noise from a drawn seed instead of
#: element by element (hypothesis draws large arrays slowly); every default-sized case
#: (at most 729 elements) is drawn element by element.
_DRAWN_MAX = 1024


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
           channel_axes=None, max_side: int = 3, ragged: bool = False, min_side: int = 1):
    """(shape, axis) for a mode: valid statistics (>= 2 values per channel per set).
    ``channel_axes`` (as ``Harness.channel_axes``) restricts the channel axis;
    ``min_side``/``max_side`` bound each spatial size; ``ragged`` makes a "batch"-mode batch with
    K >= 2 not a multiple of K."""
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
    spatial = draw(st.lists(st.integers(min_side, max_side), min_size=rank - 2,
                            max_size=rank - 2))
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
    if ragged and mode == "batch" and k > 1 and n % k == 0:
        n += draw(st.integers(1, k - 1))  # n // k, the smallest group, is unchanged
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
def catalog_shapes(draw, *, mode: str, ranks=(2, 3, 4, 5), groups=(1, 4), channel_axes=None,
                   ragged: bool = False):
    """(shape, axis, K) from :data:`CATALOG` and :data:`CATALOG_GROUPS`; with
    ``channel_axes``, catalog shapes are re-read with each declared channel axis; with
    ``ragged``, only "batch"-mode entries whose batch is not a multiple of K >= 2."""
    catalog = CATALOG if channel_axes is None else tuple(
        (shape, a) for shape, _ in CATALOG for a in channel_axes
        if -len(shape) < a < len(shape) and a % len(shape))
    options = [
        (shape, axis, k)
        for shape, axis in catalog
        if len(shape) in ranks
        for k in CATALOG_GROUPS
        if groups[0] <= k <= groups[1] and _feasible(shape, axis, mode, k)
        and not (ragged and mode == "batch" and (k < 2 or shape[0] % k == 0))
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
    ragged: bool = False,
    min_side: int = 1,
    max_side: int = 3,
    max_batch_extra: int = 5,
    shared: bool = False,
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
    ragged : bool
        In "batch" mode with K >= 2, a batch that is not a multiple of K (groups of
        unequal sizes, see ``localnorm.group_sizes``).
    min_side, max_side, max_batch_extra : int
        The range of each spatial size, and how far the batch may exceed its smallest
        valid size: larger values give larger statistics sets (not with ``catalog``).
    shared : bool
        gamma/beta one (1, C) row shared by the K groups along the batch axis (Ghost
        BatchNorm), ``Case.groups = K``.
    """
    dtype = draw(st.sampled_from(list(dtypes)))
    mode = draw(st.sampled_from(list(modes)))
    partition = draw(st.sampled_from(list(partitions)))
    if catalog:
        shape, axis, k = draw(catalog_shapes(mode=mode, ranks=ranks, groups=groups,
                                             channel_axes=channel_axes, ragged=ragged))
    else:
        k = draw(st.integers(*groups))
        shape, axis = draw(shapes(mode=mode, num_groups=k, ranks=ranks,
                                  channel_axes=channel_axes, min_side=min_side,
                                  max_side=max_side, ragged=ragged,
                                  max_batch_extra=max_batch_extra))
    size = int(np.prod(shape))

    def noise_in(low, high):
        if size <= _DRAWN_MAX:
            return draw(hnp.arrays(np.float64, shape, elements=st.floats(low, high, width=32)))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="noise seed"))
        return rng.uniform(low, high, size=shape).astype(np.float32).astype(np.float64)

    if conditioning == "well":
        # Golden-angle samples of a sine: all distinct and spread in every subset.
        base = np.sin(np.arange(size) * 2.399963229728653 + 0.5).reshape(shape)
        noise = noise_in(-0.25, 0.25)
        scale = draw(st.sampled_from([1.0, 0.25, 4.0, 1e-2, 1e2]))
        offset = draw(st.floats(-4, 4, width=32))
        x = scale * (base + noise) + offset * max(scale, 1.0)
    elif conditioning == "near-constant":
        offset = draw(st.floats(-100, 100, width=32))
        spread = draw(st.sampled_from([0.0, 1e-7, 1e-5, 1e-3, 1e-2]))
        noise = noise_in(-1, 1)
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
    rows = 1 if shared else k
    case = Case(
        x=x,
        gamma=draw(params(rows, c)),
        beta=draw(params(rows, c)),
        groups=k if shared else None,
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


# -- realistic sizes ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Realistic:
    """One full-size input of :data:`REALISTIC`: ``x ~ Normal(mean, std)`` of shape
    ``(batch, *spatial)`` plus ``channels`` on the first (``channels_last=False``) or
    last non-batch axis, K groups along the batch axis."""

    id: str
    batch: int
    channels: int
    spatial: tuple[int, ...]
    channels_last: bool
    num_groups: int
    mode: str
    partition: str
    dtype: str
    mean: float
    std: float
    group: int = 0
    eps: float = 1e-5


#: Realistic sizes, where summation error shows (the strategies' sets hold < 256 values):
#: both layouts, even and ragged batches, each mode, every dtype, offsets up to 50 std.
REALISTIC: tuple[Realistic, ...] = (
    Realistic("nhwc-even-f32", 256, 4, (32, 32), True, 4, "batch", "contiguous",
              "float32", 10.0, 10.0),
    Realistic("nhwc-even-strided-f64", 256, 4, (32, 32), True, 4, "batch", "strided",
              "float64", 50.0, 1.0),
    Realistic("nhwc-even-f32-offset", 256, 4, (32, 32), True, 4, "batch", "contiguous",
              "float32", 50.0, 1.0),
    Realistic("nhwc-ragged-f64", 513, 4, (16, 16), True, 4, "batch", "contiguous",
              "float64", 50.0, 1.0),
    Realistic("nchw-ragged-strided-f32", 250, 6, (8, 8), False, 3, "batch", "strided",
              "float32", 50.0, 1.0),
    Realistic("dense-ragged-f32", 1001, 16, (), True, 3, "batch", "contiguous",
              "float32", 10.0, 10.0),
    Realistic("nhwc-set-f64", 64, 16, (16, 16), True, 4, "set", "contiguous",
              "float64", 10.0, 10.0, group=2),
    Realistic("nhwc-single-f32", 16, 8, (64, 64), True, 2, "single", "contiguous",
              "float32", 50.0, 1.0, group=1),
    Realistic("nhwc-even-f16", 128, 8, (16, 16), True, 2, "batch", "contiguous",
              "float16", 10.0, 10.0),
    Realistic("nchw-ragged-strided-bf16", 130, 8, (16, 16), False, 4, "batch", "strided",
              "bfloat16", 5.0, 2.0),
)


def realistic_case(entry: Realistic, channel_axes=None) -> Case:
    """The :class:`Case` of a :data:`REALISTIC` entry, with seeded data (the same bits on
    every run). With ``channel_axes`` (as ``Harness.channel_axes``) the channels go on a
    declared axis: the entry's layout if declared, else the first declared one."""
    rank = 2 + len(entry.spatial)
    axis = rank - 1 if entry.channels_last else 1
    if channel_axes is not None:
        declared = [a % rank for a in channel_axes if -rank < a < rank and a % rank]
        if declared and axis not in declared:
            axis = declared[0]
    dims = list(entry.spatial)
    dims.insert(axis - 1, entry.channels)
    shape = (entry.batch, *dims)
    rng = np.random.default_rng(zlib.crc32(entry.id.encode()))
    x = entry.mean + entry.std * rng.standard_normal(shape)
    k, c = entry.num_groups, entry.channels
    gamma = rng.normal(size=(k, c)).astype(np.float32).astype(np.float64)
    beta = rng.normal(size=(k, c)).astype(np.float32).astype(np.float64)
    return Case(x=as_dtype(x, entry.dtype), gamma=gamma, beta=beta, axis=axis,
                mode=entry.mode, group=entry.group, partition=entry.partition, eps=entry.eps)
