"""The math of LocalNorm, written once against an array namespace ``xp`` (no validation;
see :func:`localnorm.local_norm` and ``docs/spec.md``).

Every adapter runs these functions: the core functional on any array-API library (NumPy,
array-api-strict, PyTorch, JAX, CuPy through array-api-compat), ``localnorm.torch`` on
torch tensors, ``localnorm.flax`` on JAX arrays, ``localnorm.keras`` on a small
``keras.ops`` namespace. An adapter adds only its autodiff glue around
:func:`batch_forward` / :func:`batch_vjp` / :func:`batch_jvp`.

The K groups along the batch axis (:class:`Groups`). An even batch (N a multiple of K) is
one reshaped view, ``(K, m, C)`` for contiguous groups and ``(m, K, C)`` for strided ones;
a ragged batch, ``q, r = divmod(N, K)``, is two views (:func:`group_blocks`); a batch size
known only at run time (Keras on TensorFlow with an unknown batch axis) uses a (K, N)
membership mask. No Python loop over samples or groups, and no matmul (which GPUs may run
in TF32). A batch smaller than K leaves groups without samples: such a group's statistics
are defined as mean 0 and variance 0 (they reach no output) and its gamma_k/beta_k get a
zero gradient, so a compiled program that cannot raise still gives finite results.

The moments (:func:`sample_moments`, :func:`group_moments`). One algorithm for every mode
and backend: each sample's moments over the spatial axes by a corrected two-pass
(``mean0 = mean(x)``, ``d = x - mean0``, ``mean = mean0 + mean(d)``, ``var = mean(d**2)``:
the correction removes the rounding error of the first mean, so the error scales with the
data's spread, not its offset; Bjorck, and Chan, Golub and LeVeque 1983), then a set's
(a group, or the whole batch) from its samples' by the law of total variance: the mean of
the per-sample variances plus the variance of the per-sample means, a tensor of N*C
values. Only the per-sample passes read the activation, and every reduction covers
adjacent axes (what TensorFlow's CPU kernels and XLA's fusion need).

The derivative of ``"batch"`` mode is the closed-form BatchNorm derivative per group
(:func:`batch_vjp` for reverse mode, :func:`batch_jvp` for a forward-mode rule that JAX
transposes); ``"single"`` and ``"set"`` are differentiated by the framework.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from . import _spec


def compute_dtype(xp, *dtypes):
    """At least float32: float16/bfloat16 statistics are accumulated in float32; float64
    when any of ``dtypes`` is float64."""
    for dt in dtypes:
        if dt == xp.float64:
            return xp.float64
    return xp.float32


def _device(xp, x):
    dev = getattr(xp, "device_of", None)
    if dev is not None:
        return dev(x)
    from array_api_compat import device

    return device(x)


def bshape(ndim: int, axis: int, channels: int, batch: int = 1) -> tuple[int, ...]:
    """The shape that broadcasts a per-sample (N, C) value against an input of rank
    ``ndim`` with channels on ``axis``."""
    shape = [1] * ndim
    shape[0] = batch
    shape[axis] = channels
    return tuple(shape)


def group_blocks(xp, x, num_groups: int, partition: str) -> list[tuple[Any, int]]:
    """Views of the batch whose two leading axes are (groups, members) or (members,
    groups), covering the K groups along the batch axis in order.

    Returns ``[(block, member_axis), ...]``: ``block`` has shape ``(a, b, *x.shape[1:])``
    and holds whole groups, their members along ``member_axis`` (0 or 1) and the groups
    along the other leading axis; concatenating the blocks' groups gives groups 0..K-1.
    With ``q, r = divmod(N, K)`` (see :func:`localnorm.group_sizes`):

    - contiguous: ``x[:r(q+1)]`` as ``(r, q+1, ...)`` and the rest as ``(K-r, q, ...)``;
    - strided: ``x[:qK]`` as ``(q, K, ...)``; groups ``< r`` are its first r columns
      plus the r leftover samples ``x[qK:]`` as a last row, ``(q+1, r, ...)``; the other
      groups are its remaining columns, ``(q, K-r, ...)``.

    One block when r = 0 (no copy). With N < K (q = 0) the blocks of empty groups have
    no members.
    """
    n, k = x.shape[0], num_groups
    tail = tuple(x.shape[1:])
    q, r = n // k, n % k  # not divmod: a traced size (torch.compile's SymInt) has no divmod
    if partition == "contiguous":
        if r == 0:
            return [(xp.reshape(x, (k, q) + tail), 1)]
        split = r * (q + 1)
        return [(xp.reshape(x[:split, ...], (r, q + 1) + tail), 1),
                (xp.reshape(x[split:, ...], (k - r, q) + tail), 1)]
    head = xp.reshape(x[: q * k, ...], (q, k) + tail)
    if r == 0:
        return [(head, 0)]
    rest = xp.reshape(x[q * k:, ...], (1, r) + tail)
    return [(xp.concat([head[:, :r, ...], rest], axis=0), 0), (head[:, r:, ...], 0)]


def value_count(xp, x, axes: tuple[int, ...], dtype):
    """How many values the ``axes`` of ``x`` hold: a Python float, or, where a size is
    known only at run time (not a Python int in ``x.shape``: None in a TensorFlow graph),
    a 0-d array of ``dtype`` built from the namespace's ``dim_size(x, axis)``."""
    count, dynamic = 1.0, None
    for a in axes:
        if isinstance(x.shape[a], int):
            count *= x.shape[a]
        else:
            size = xp.astype(xp.dim_size(x, a), dtype)
            dynamic = size if dynamic is None else dynamic * size
    return count if dynamic is None else dynamic * count


def _arange(xp, n, device):
    """0..n-1 as int32 (a namespace without devices, the Keras shim, is given none)."""
    return xp.arange(0, n, dtype=xp.int32, **({} if device is None else {"device": device}))


def _at_least_1(xp, q):
    """max(q, 1) for a size: a Python int (also what Dynamo shows of a traced size), a
    scalar of the namespace, or a symbolic size (the namespace's ``size_max`` where its
    ``maximum`` takes arrays only: torch.export's SymInt)."""
    if isinstance(q, (int, np.integer)):
        return max(q, 1)
    own = getattr(xp, "size_max", None)
    return own(q, 1) if own is not None else xp.maximum(q, 1)


def _group_index(xp, n, k: int, partition: str, device=None):
    """Each sample's group (int32, shape (N,)), the rule of :func:`localnorm.group_index`,
    in namespace operations: for a batch size ``n`` that is a Python int, a size a tracer
    follows symbolically (``torch.compile``'s dynamic shapes), or a scalar of the
    namespace known only at run time."""
    i = _arange(xp, n, device)
    if partition == "strided":
        return i % k
    q, r = n // k, n % k
    big = r * (q + 1)
    small = r + (i - big) // _at_least_1(xp, q)
    return xp.where(i < big, i // (q + 1), small)


class Groups:
    """The K groups along the batch axis of an input: how its per-sample (N, C) values
    are summed per group, and per-group (K, C) values broadcast back to its samples.

    ``x`` fixes the layout (shape, channel ``axis``, device); its batch size may be
    unknown until run time (``x.shape[0]`` None), when the namespace must provide
    ``batch_size(x)``, and so may its spatial sizes (``dim_size(x, axis)``, see
    :func:`value_count`); the Keras adapter's namespaces provide both. ``num_groups`` may
    itself be a 0-d integer array, a K counted at run time (Ghost BatchNorm's K from a
    virtual batch size on a batch of unknown size): the namespace then provides
    ``segment_sum(values, segment_ids, num_segments)`` for the per-group sums.
    """

    def __init__(self, xp, x, axis: int, num_groups: int, partition: str, cdt):
        self.xp, self.k, self.partition, self.axis, self.cdt = xp, num_groups, partition, axis, cdt
        self.ndim, self.c = x.ndim, x.shape[axis]
        self.spatial = tuple(a for a in range(1, x.ndim) if a != axis)
        count = value_count(xp, x, self.spatial, cdt)
        self.spatial_size = int(count) if isinstance(count, float) else None
        self.n = x.shape[0] if isinstance(x.shape[0], int) else None
        self._segments = not isinstance(num_groups, (int, np.integer))
        if self._segments:  # K known at run time only: the batch size is treated so too
            self.n = None
        device = _device(xp, x)
        if self.n is not None:
            # In namespace arithmetic, not NumPy: under torch.compile with dynamic shapes
            # the batch size is a symbol that only the namespace's operations can follow.
            q, r = self.n // num_groups, self.n % num_groups
            first = xp.astype(_arange(xp, num_groups, device) < r, cdt)
            self.members = xp.reshape(first + q, (num_groups, 1))  # localnorm.group_sizes
            self._index = None
            if r:
                self._index = _group_index(xp, self.n, num_groups, partition, device)
        else:
            n = xp.batch_size(x)
            self._index = _group_index(xp, n, num_groups, partition)
            if self._segments:
                ones = xp.ones_like(xp.astype(self._index, cdt))
                self.members = xp.reshape(xp.segment_sum(ones, self._index, num_groups), (-1, 1))
            else:
                ks = xp.arange(0, num_groups, dtype=xp.int32)
                self._mask = xp.astype(self._index[None, :] == ks[:, None], cdt)  # (K, N)
                self.members = xp.sum(self._mask, axis=1, keepdims=True)
        # Groups without samples (N < K) divide by 1: their sums are 0, so their
        # statistics are 0 and reach no output (see the module docstring).
        self.members_or_1 = xp.maximum(self.members, xp.ones_like(self.members))
        self.values_or_1 = self.members_or_1 * count

    def group_sum(self, v):
        """(N, C) per-sample values -> (K, C) sums over each group's samples."""
        xp, k = self.xp, self.k
        if self._segments:
            return xp.segment_sum(v, self._index, k)
        if self.n is None:
            return xp.sum(self._mask[:, :, None] * v[None, ...], axis=1)
        if self.n % k == 0:
            m = self.n // k
            if self.partition == "contiguous":
                return xp.sum(xp.reshape(v, (k, m, self.c)), axis=1)
            return xp.sum(xp.reshape(v, (m, k, self.c)), axis=0)
        sums = [xp.sum(block, axis=member)
                for block, member in group_blocks(xp, v, k, self.partition)]
        return xp.concat(sums, axis=0)

    def to_samples(self, v):
        """(K, C) per-group values -> (N, C), each sample's group's row."""
        xp, k = self.xp, self.k
        if self._index is not None:
            return xp.take(v, self._index, axis=0)
        m = self.n // k
        if self.partition == "contiguous":
            return xp.reshape(xp.broadcast_to(xp.reshape(v, (k, 1, self.c)), (k, m, self.c)), (self.n, self.c))
        return xp.reshape(xp.broadcast_to(xp.reshape(v, (1, k, self.c)), (m, k, self.c)), (self.n, self.c))

    def expand(self, v):
        """(N, C) -> broadcastable against x."""
        n = -1 if self.n is None else self.n
        return self.xp.reshape(v, bshape(self.ndim, self.axis, self.c, n))

    def full(self, v):
        """(K, C) -> broadcastable against x, one row per sample."""
        return self.expand(self.to_samples(v))

    def sum(self, a, dtype=None):
        """Sum of an activation-shaped ``a`` over the spatial axes, then over each
        group's samples: (K, C); ``dtype``: the accumulation dtype, when not a's."""
        if dtype is None:
            return self.group_sum(self.per_sample(self.xp.sum, a))
        if not self.spatial:
            return self.group_sum(_as(self.xp, a, dtype))
        return self.group_sum(self.per_sample(
            lambda v, axis: self.xp.sum(v, axis=axis, dtype=dtype), a))

    def per_sample(self, reduce: Callable, a):
        """``reduce`` over the spatial axes, as (N, C)."""
        xp = self.xp
        n = -1 if self.n is None else self.n
        v = reduce(a, axis=self.spatial) if self.spatial else a
        return xp.reshape(v, (n, self.c))


def _mean(xp, a, axes: tuple[int, ...], count: float):
    """Mean over ``axes`` (keepdims) as a sum and one division (a library's own mean may
    accumulate float64 in float32: Keras 3.15's on the PyTorch backend)."""
    return xp.sum(a, axis=axes, keepdims=True) / count


def sample_moments(xp, xc, axis: int, *, fusing: bool = False):
    """Each sample's mean and biased variance over the spatial axes (keepdims, shape
    broadcastable against ``xc``), by the corrected two-pass (module docstring). The
    deviations are written ``xc + (-mean0)``: the same values bit for bit as
    ``xc - mean0``, while the output's own ``xc - mean`` stays another expression, which
    XLA fuses into its consumer instead of writing a centered activation out and reading
    it back. Without spatial axes a sample is one value per channel: its own mean,
    variance 0.

    ``fusing``: for a compiler that fuses elementwise work into the reductions that read
    it (XLA), the correction's deviations are a third expression, ``xc - mean0``, so that
    no centered array has two consumers (which XLA on CPU writes out and reads back by
    each); the same values bit for bit, one more elementwise pass where nothing fuses."""
    spatial = tuple(a for a in range(1, xc.ndim) if a != axis)
    if not spatial:
        return xc, xp.zeros_like(xc)
    count = value_count(xp, xc, spatial, xc.dtype)
    mean0 = _mean(xp, xc, spatial, count)
    d = xc + (-mean0)
    correction = _mean(xp, xc - mean0 if fusing else d, spatial, count)
    return mean0 + correction, _mean(xp, d * d, spatial, count)


def _native_sum_of_squares(xp, d, axes: tuple[int, ...]):
    """``sum(d * d)`` over ``axes`` (keepdims) by the namespace's own ``sum_of_squares(d,
    axes)``, one native reduction that writes no squared copy of ``d`` (the torch
    adapter's, where the axes are the trailing ones of a contiguous tensor); None where
    the namespace has none for these axes."""
    own = getattr(xp, "sum_of_squares", None)
    return None if own is None else own(d, axes)


def _centered(xp, x, spatial: tuple[int, ...], cdt):
    """The in-place variant of :func:`sample_moments` (the same corrected two-pass):
    ``(centre, mean, var, d)`` with ``d = x - centre`` a new array in ``cdt``, which the
    caller may overwrite, and ``centre`` the per-sample value subtracted (keepdims). x is
    read in its own dtype (float16/bfloat16: the sums accumulate in ``cdt`` and the
    subtraction promotes), so no ``cdt`` copy of x is made.

    ``d`` is the only activation-sized array made: where the namespace has no native sum
    of squares (:func:`_native_sum_of_squares`), the deviations are squared in their own
    array and ``d`` is then written again as ``x - mean`` (``centre`` is the corrected
    mean), where ``sum(d * d)`` would make a second array (on CPU a fresh allocation's
    page faults cost more than the two extra passes: benchmarks/discussion.md)."""
    count = value_count(xp, x, spatial, cdt)
    mean0 = xp.sum(x, axis=spatial, keepdims=True, dtype=cdt) / count
    d = x - mean0
    mean = mean0 + xp.sum(d, axis=spatial, keepdims=True) / count
    squares = _native_sum_of_squares(xp, d, spatial)
    if squares is not None:
        return mean0, mean, squares / count, d
    d *= d
    var = xp.sum(d, axis=spatial, keepdims=True) / count
    d[...] = x
    d -= mean
    return mean, mean, var, d


def group_moments(xp, xc, groups: Groups, *, fusing: bool = False, sample=None):
    """Per-group mean and biased variance, each (K, C), from the per-sample moments by
    the law of total variance (``xc`` already in the compute dtype; ``fusing``: see
    :func:`sample_moments`; ``sample``: the per-sample moments when already computed)."""
    n, c = -1 if groups.n is None else groups.n, groups.c
    if sample is None:
        sample = sample_moments(xp, xc, groups.axis, fusing=fusing)
    m_s, v_s = (xp.reshape(v, (n, c)) for v in sample)
    mean = groups.group_sum(m_s) / groups.members_or_1
    dev = m_s - groups.to_samples(mean)
    var = groups.group_sum(v_s + dev * dev) / groups.members_or_1
    return mean, var


def _as(xp, a, dtype):
    return a if a.dtype == dtype else xp.astype(a, dtype)


def batch_forward(xp, x, gamma, beta, *, axis: int, num_groups: int, partition: str,
                  eps: float, fusing: bool = False, inplace: bool = False):
    """``"batch"`` mode: K groups along the batch axis, each its own statistics and
    gamma_k/beta_k ((K, C)). Returns ``(y, mean, var, rstd)``: y in x's dtype, the group
    means, biased variances and inverse standard deviations (K, C) in the compute dtype.
    ``fusing``: see :func:`sample_moments`.

    ``(x - mean) * (gamma * rstd) + beta``, the subtraction first: near-constant groups
    with a large offset stay accurate in float32. gamma and beta may also be one (1, C)
    row shared by the K groups (Ghost BatchNorm).

    ``inplace``: for a caller that records no derivative of this call (an autograd
    function's forward, inference) on a library with mutable arrays (NumPy, eager
    PyTorch). The same arithmetic, evaluated as ``d * scale + offset`` with ``d = x -
    centre`` the per-sample centered values (:func:`_centered`) and ``offset = (centre -
    mean) * scale + beta`` per sample: the one activation-sized temporary becomes the
    output in place (``*=``, ``+=``), where the plain expression writes five."""
    cdt = compute_dtype(xp, x.dtype, gamma.dtype, beta.dtype)
    groups = Groups(xp, x, axis, num_groups, partition, cdt)
    if inplace and groups.spatial:
        centre, m_s, v_s, y = _centered(xp, x, groups.spatial, cdt)
        mean, var = group_moments(xp, None, groups, sample=(m_s, v_s))
    else:
        xc = _as(xp, x, cdt)
        mean, var = group_moments(xp, xc, groups, fusing=fusing)
    rstd = 1.0 / xp.sqrt(var + eps)
    shift = _as(xp, beta, cdt)
    scale = _as(xp, gamma, cdt) * rstd
    # one (1, C) row shared by the groups (Ghost BatchNorm) broadcasts as it is
    shared = shift.shape[0] == 1
    if inplace and groups.spatial:
        scale_s = groups.to_samples(scale)
        y *= groups.expand(scale_s)
        y += groups.expand((xp.reshape(centre, scale_s.shape) - groups.to_samples(mean))
                           * scale_s + (shift if shared else groups.to_samples(shift)))
    else:
        shift = xp.reshape(shift, bshape(x.ndim, axis, groups.c)) if shared \
            else groups.full(shift)
        y = (xc - groups.full(mean)) * groups.full(scale) + shift
    return _as(xp, y, x.dtype), mean, var, rstd


def batch_vjp(xp, x, gamma, mean, rstd, dy, *, axis: int, num_groups: int, partition: str,
              inplace: bool = False):
    """The closed-form reverse-mode derivative of :func:`batch_forward` per group along
    the batch axis: with ``a = gamma * rstd``, ``d = x - mean`` and m values per channel
    in the group,

        dbeta = sum(dy),  dgamma = rstd * sum(dy * d),
        dx = a * dy - a * dbeta / m - a * rstd**2 * d * sum(dy * d) / m.

    Returns ``(dx, dgamma, dbeta)``: dx in x's dtype, dgamma and dbeta in the compute
    dtype with gamma's shape ((K, C), or (1, C) for a scale and shift shared by the
    groups: the sum over the groups). Written in ``xp`` operations, so a framework can
    differentiate it again; ``inplace`` (nothing differentiates it: see
    :func:`batch_forward`) reads x and dy in their own dtypes and builds dx in ``d``'s
    array as ``a * (dy + d * c1 + c0)`` (``c1 = -rstd**2 * sum(dy * d) / m``, ``c0 =
    -sum(dy) / m``): four in-place steps and no activation-sized temporary besides
    ``d`` and the product that ``sum(dy * d)`` reads, where ``a * dy + ...`` writes one
    more."""
    cdt = mean.dtype
    groups = Groups(xp, x, axis, num_groups, partition, cdt)
    if inplace:
        d = x - groups.full(mean)
        dyc = dy
        s_dy = groups.sum(dy, dtype=cdt)
    else:
        d = _as(xp, x, cdt) - groups.full(mean)
        dyc = _as(xp, dy, cdt)
        s_dy = groups.sum(dyc)
    s_dyd = groups.sum(dyc * d)
    a = _as(xp, gamma, cdt) * rstd
    if inplace:
        dx = d
        dx *= groups.full(-rstd * rstd * s_dyd / groups.values_or_1)
        dx += groups.full(-s_dy / groups.values_or_1)
        dx += dyc
        dx *= groups.full(a)
    else:
        b1 = -a * rstd * rstd * s_dyd / groups.values_or_1
        b0 = -a * s_dy / groups.values_or_1
        dx = dyc * groups.full(a) + (d * groups.full(b1) + groups.full(b0))
    dgamma, dbeta = s_dyd * rstd, s_dy
    if gamma.shape[0] == 1:  # one row shared by the groups (Ghost BatchNorm): their sum
        dgamma = xp.sum(dgamma, axis=0, keepdims=True)
        dbeta = xp.sum(dbeta, axis=0, keepdims=True)
    return _as(xp, dx, x.dtype), dgamma, dbeta


def batch_jvp(xp, x, gamma, mean, rstd, dx, dgamma, dbeta, *, axis: int, num_groups: int,
              partition: str):
    """The closed-form forward-mode derivative of :func:`batch_forward`'s output, linear
    in the tangents ``(dx, dgamma, dbeta)`` (with ``xhat`` the normalized x, ``A = gamma *
    rstd`` and means over a group's values)::

        dy = A (dx - mean(dx) - xhat mean(dx xhat)) + dgamma xhat + dbeta

    The per-group terms are multiplied by A before they are broadcast, so that the
    transpose (what JAX derives for reverse mode) is the sums of ct and ct * xhat that
    dbeta and dgamma need anyway. Returns dy in the compute dtype."""
    cdt = mean.dtype
    groups = Groups(xp, x, axis, num_groups, partition, cdt)
    xhat = (_as(xp, x, cdt) - groups.full(mean)) * groups.full(rstd)
    a = _as(xp, gamma, cdt) * rstd
    dxc = _as(xp, dx, cdt)
    mean_dx = groups.sum(dxc) / groups.values_or_1
    mean_dx_xhat = groups.sum(dxc * xhat) / groups.values_or_1
    return (groups.full(a) * dxc
            + groups.full(_as(xp, dbeta, cdt) - a * mean_dx)
            + xhat * groups.full(_as(xp, dgamma, cdt) - a * mean_dx_xhat))


def batch_jvp_rule(xp, primals, tangents, *, axis: int, num_groups: int, partition: str,
                   eps: float, fusing: bool = False):
    """The forward-mode rule of :func:`batch_forward` for a framework that takes one
    (``jax.custom_jvp``): ``primals`` and ``tangents`` are ``(x, gamma, beta)`` and their
    tangents; returns ``(y, dy)``, dy (:func:`batch_jvp`) in y's dtype."""
    layout = dict(axis=axis, num_groups=num_groups, partition=partition)
    y, mean, _, rstd = batch_forward(xp, *primals, eps=eps, fusing=fusing, **layout)
    dy = batch_jvp(xp, primals[0], primals[1], mean, rstd, *tangents, **layout)
    return y, _as(xp, dy, y.dtype)


def _rows(xp, p, group, ndim: int, axis: int):
    """The gamma/beta row(s) of ``group`` (an int, or an (N,) integer array: one group per
    sample), broadcastable against the input; a (1, C) parameter is shared by all groups."""
    c = p.shape[1]
    if p.shape[0] == 1:
        return xp.reshape(p, bshape(ndim, axis, c))
    if isinstance(group, (int, np.integer)):
        return xp.reshape(p[int(group), :], bshape(ndim, axis, c))
    return xp.reshape(xp.take(p, group, axis=0), bshape(ndim, axis, c, -1))


def batch_mean(xp, v):
    """The mean over the batch axis (keepdims): the default ``reduce_batch`` of
    :func:`eval_forward`."""
    return xp.mean(v, axis=0, keepdims=True)


def eval_forward(xp, x, gamma, beta, *, axis: int, mode: str, group: Any, eps: float,
                 reduce_batch: Callable | None = None, fusing: bool = False,
                 inplace: bool = False):
    """``"single"`` (each sample its own statistics) or ``"set"`` (the whole batch's)
    mode, with the gamma/beta of ``group`` (an int, or in ``"single"`` mode an (N,)
    integer array). ``reduce_batch(xp, v)`` is the mean over the batch axis used for the
    set's moments (the Flax adapter passes one that also sums over a device mesh);
    ``fusing``: see :func:`sample_moments`; ``inplace``: see :func:`batch_forward` (the
    centered input becomes the output)."""
    cdt = compute_dtype(xp, x.dtype, gamma.dtype, beta.dtype)
    spatial = tuple(a for a in range(1, x.ndim) if a != axis)
    if inplace and spatial:
        centre, mean, var, y = _centered(xp, x, spatial, cdt)
    else:
        xc = _as(xp, x, cdt)
        mean, var = sample_moments(xp, xc, axis, fusing=fusing)
    if mode == "set":  # the batch's moments from its samples': law of total variance
        reduce_batch = reduce_batch or batch_mean
        set_mean = reduce_batch(xp, mean)
        var = reduce_batch(xp, var + (mean - set_mean) * (mean - set_mean))
        mean = set_mean
    rstd = 1.0 / xp.sqrt(var + eps)
    g = _rows(xp, _as(xp, gamma, cdt), group, x.ndim, axis)
    b = _rows(xp, _as(xp, beta, cdt), group, x.ndim, axis)
    if inplace and spatial:  # y holds x - c: (x - mean) * s + b = y * s + (c - mean) * s + b
        scale = rstd * g
        y *= scale
        y += (centre - mean) * scale + b
    else:
        y = (xc - mean) * (rstd * g) + b
    return _as(xp, y, x.dtype)


def running_forward(xp, x, gamma, beta, mean, var, *, axis: int, eps: float,
                    inplace: bool = False):
    """``"running"`` mode with one stored (1, C) row of statistics and of gamma/beta (a
    Ghost BatchNorm layer's shared row; None: no scale / no shift): ``(x - mean) *
    (gamma * rstd) + beta``, the subtraction first as in the other modes, computed in at
    least float32; the result in x's dtype. Any batch of at least one sample.
    ``inplace``: see :func:`batch_forward` (x is read in its own dtype, and ``x - mean``
    becomes the output)."""
    dtypes = [a.dtype for a in (x, gamma, beta) if a is not None]
    cdt = compute_dtype(xp, *dtypes)
    shape = bshape(x.ndim, axis, x.shape[axis])
    scale = 1.0 / xp.sqrt(_as(xp, var, cdt) + eps)
    if gamma is not None:
        scale = scale * _as(xp, gamma, cdt)
    mean, scale = xp.reshape(_as(xp, mean, cdt), shape), xp.reshape(scale, shape)
    if inplace:
        y = x - mean
        y *= scale
        if beta is not None:
            y += xp.reshape(_as(xp, beta, cdt), shape)
        return _as(xp, y, x.dtype)
    y = (_as(xp, x, cdt) - mean) * scale
    if beta is not None:
        y = y + xp.reshape(_as(xp, beta, cdt), shape)
    return _as(xp, y, x.dtype)


def local_norm(xp, x, gamma, beta, *, axis: int, mode: str, group: Any, partition: str,
               eps: float, num_groups: int | None = None):
    """LocalNorm on validated input (see :func:`localnorm.local_norm`)."""
    if mode == "batch":
        k = gamma.shape[0] if num_groups is None else num_groups
        return batch_forward(xp, x, gamma, beta, axis=axis, num_groups=k,
                             partition=partition, eps=eps)[0]
    return eval_forward(xp, x, gamma, beta, axis=axis, mode=mode, group=group, eps=eps)
