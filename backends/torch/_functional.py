"""Native PyTorch paths of LocalNorm (no validation; the layers validate).

The math is :func:`localnorm.local_norm` (see ``docs/spec.md``); this module only chooses
how to run it fast with PyTorch kernels, and the conformance harness
(``conformance/harnesses/torch_layers.py``) proves the eager paths equal to
:func:`localnorm.reference.local_norm`, ``tests/torch/test_paths.py`` the others:

- ``"batch"`` mode, **fused**: the K groups along the batch axis become K*C channels of
  one ``F.batch_norm`` call. With strided groups on an NCHW batch that is a multiple of K,
  the batch viewed as (N/K, K*C, ...) is a free view, and this is the path on every
  device. Contiguous groups and channels_last inputs need one layout copy in and one out;
  that variant runs on CUDA and under graph tracers (``torch.compile``, export,
  ``torch.func``), where the copies are cheap or fused away.
- ``"batch"`` mode, **reduction** (eager CPU: contiguous groups, channels_last inputs,
  ragged batches N % K != 0): per-sample sums over the spatial axes, then per-group sums
  over free views of the batch axis; a two-pass (centered) variance; the closed-form
  BatchNorm backward in :class:`_BatchGroups`, whose ``sum((x - mean) * dy)`` is one
  buffer (``(x - mean) * dy``, a subtraction and an in-place product) and a sum.
  No layout copy, one activation-sized buffer in the forward pass and one in the
  backward pass (as ``F.batch_norm``), and only the input is saved for backward. A
  channels_last batch that is a multiple of K is read
  through a view of its memory that separates the groups ((K, M*S, C) for contiguous
  groups, (M, K, S, C) for strided ones, :func:`_cl_groups`): the group sums are
  reductions over its outer axes, which vectorize over the channels, and the squared
  deviations (forward) and ``(x - mean) * dy`` (backward) are written into one buffer
  each (a subtraction, then an in-place square or product). Under graph tracers the same
  math runs as plain differentiable operations (:func:`_batch_groups_plain`).
- ``"single"``: per-sample reductions over the spatial axes (plain reductions, so ONNX
  export has no training-mode BatchNormalization node).
- ``"set"``: one fused ``F.batch_norm`` with group ``g``'s scale and shift.
- ``"running"``: ``F.batch_norm`` with group ``g``'s running statistics.

Dtypes: statistics and the affine step are computed in ``cdt`` (at least float32, see
:func:`compute_dtype`); float16/bfloat16 activations are read as they are (``F.batch_norm``
takes them with float32 weights on CPU and CUDA and accumulates in float32), so no
float32 copy of the activations is made or saved for backward.

No Python loop over samples or groups anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "LOW_PRECISION",
    "batch_groups",
    "compute_dtype",
    "group_moments",
    "graph_mode",
    "running",
    "set_stats",
    "single",
    "update_running",
]

#: Activation dtypes normalized in float32 (AMP).
LOW_PRECISION = (torch.float16, torch.bfloat16)


def graph_mode() -> bool:
    """Whether a tracer is running: ``torch.compile``/``torch.export``, TorchScript
    tracing or scripting, or a ``torch.func`` transform (``vmap``, ``grad``). Tracers get
    plain differentiable operations (no ``out=``, no custom autograd Function) and no
    value-dependent checks."""
    return bool(
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch._C._are_functorch_transforms_active()
    )


def compute_dtype(x: torch.Tensor, weight: torch.Tensor | None) -> torch.dtype:
    """The dtype of the statistics and the affine step: at least float32, and at least the
    parameters' dtype."""
    cdt = torch.promote_types(x.dtype, torch.float32)
    if weight is not None:
        cdt = torch.promote_types(cdt, weight.dtype)
    return cdt


def _channels_last(x: torch.Tensor) -> bool:
    if x.ndim == 4:
        fmt = torch.channels_last
    elif x.ndim == 5:
        fmt = torch.channels_last_3d
    else:
        return False
    try:
        return x.is_contiguous(memory_format=fmt) and not x.is_contiguous()
    except RuntimeError:  # vmap cannot query memory formats: take the NCHW path
        return False


def _flat(p: torch.Tensor | None) -> torch.Tensor | None:
    return None if p is None else p.reshape(-1)


def _bshape(x: torch.Tensor) -> tuple[int, ...]:
    """(N, C, 1, ...): per-sample, per-channel values broadcast against x."""
    return (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)


# -- the fused path: K*C channels of one F.batch_norm call ---------------------------------


def _to_fused(x: torch.Tensor, k: int, partition: str) -> tuple[torch.Tensor, bool]:
    """(N, C, *S) -> (N/K, K*C, *S), channel index k*C + c for group k."""
    n, c = x.shape[0], x.shape[1]
    m = n // k
    spatial = tuple(x.shape[2:])
    if _channels_last(x):
        xl = x.movedim(1, -1)  # (N, *S, C), a contiguous view
        lead = (k, m) if partition == "contiguous" else (m, k)
        xl = xl.reshape(lead + spatial + (c,))
        s = len(spatial)
        if partition == "contiguous":
            perm = (1,) + tuple(range(2, 2 + s)) + (0, 2 + s)
        else:
            perm = (0,) + tuple(range(2, 2 + s)) + (1, 2 + s)
        xl = xl.permute(perm).contiguous().view((m,) + spatial + (k * c,))  # one copy
        return xl.movedim(-1, 1), True
    if partition == "strided":
        return x.reshape((m, k * c) + spatial), False  # a free view
    xr = x.reshape((k, m, c) + spatial).transpose(0, 1)
    return xr.reshape((m, k * c) + spatial), False  # one copy


def _from_fused(y: torch.Tensor, n: int, k: int, c: int, partition: str, cl: bool) -> torch.Tensor:
    m = n // k
    spatial = tuple(y.shape[2:])
    if cl:
        s = len(spatial)
        yl = y.movedim(1, -1).contiguous().view((m,) + spatial + (k, c))
        if partition == "contiguous":
            perm = (1 + s, 0) + tuple(range(1, 1 + s)) + (2 + s,)
        else:
            perm = (0, 1 + s) + tuple(range(1, 1 + s)) + (2 + s,)
        yl = yl.permute(perm).contiguous().view((n,) + spatial + (c,))  # one copy
        return yl.movedim(-1, 1)
    if partition == "strided":
        return y.reshape((n, c) + spatial)
    return y.reshape((m, k, c) + spatial).transpose(0, 1).reshape((n, c) + spatial)


def _fused(x, weight, bias, k, partition, eps, running_mean, running_var, momentum):
    n, c = x.shape[0], x.shape[1]
    if k == 1:
        return F.batch_norm(
            x, _flat(running_mean), _flat(running_var), _flat(weight), _flat(bias),
            True, momentum, eps,
        )
    xf, cl = _to_fused(x, k, partition)
    yf = F.batch_norm(
        xf, _flat(running_mean), _flat(running_var), _flat(weight), _flat(bias),
        True, momentum, eps,
    )
    return _from_fused(yf, n, k, c, partition, cl)


# -- the reduction path: groups as free views of the batch axis ----------------------------


def _group_sum(s: torch.Tensor, k: int, partition: str) -> torch.Tensor:
    """(N, C) per-sample values -> (K, C) sums over the samples of each group along the
    batch axis (sizes as :func:`localnorm.group_sizes`), through views of s."""
    n, c = s.shape
    q, r = divmod(n, k)
    if partition == "contiguous":
        if r == 0:
            return s.view(k, q, c).sum(1)
        head = s[: r * (q + 1)].reshape(r, q + 1, c).sum(1)
        tail = s[r * (q + 1):].reshape(k - r, q, c).sum(1)
        return torch.cat((head, tail))
    out = s[: q * k].reshape(q, k, c).sum(0)
    if r:  # the last r samples belong to groups 0..r-1
        out = torch.cat((out[:r] + s[q * k:], out[r:]))
    return out


def _per_sample(v: torch.Tensor, n: int, partition: str) -> torch.Tensor:
    """(K, C) per-group rows -> (N, C), the row of each sample's group."""
    k, c = v.shape
    q, r = divmod(n, k)
    if partition == "strided":
        return v.repeat((q + 1, 1))[:n] if r else v.repeat((q, 1))
    if r == 0:
        return v[:, None, :].expand(k, q, c).reshape(n, c)
    head = v[:r, None, :].expand(r, q + 1, c).reshape(r * (q + 1), c)
    tail = v[r:, None, :].expand(k - r, q, c).reshape((k - r) * q, c)
    return torch.cat((head, tail))


def _counts(x: torch.Tensor, k: int, cdt: torch.dtype) -> torch.Tensor | float:
    """Values per channel in each group: a float for equal groups, else (K, 1)."""
    n = x.shape[0]
    spatial = x[0, 0].numel()
    q, r = divmod(n, k)
    if r == 0:
        return float(q * spatial)
    sizes = torch.full((k, 1), float(q * spatial), dtype=cdt, device=x.device)
    sizes[:r] += spatial
    return sizes


def group_moments(x: torch.Tensor, k: int, partition: str, cdt: torch.dtype,
                  inplace: bool = False):
    """Group means and biased variances, each (K, C) in ``cdt``, with the per-sample means
    (N, C), a buffer of x's shape and memory format in ``cdt`` (the centered input
    ``x - mean``, or with ``inplace`` on a channels_last input its square) and the number
    of values per channel in each group.

    Two passes (sum, then the sum of squares of the centered values), as the reference.
    """
    n = x.shape[0]
    dims = tuple(range(2, x.ndim))
    count = _counts(x, k, cdt)
    s = x.sum(dims, dtype=cdt) if dims else x.to(cdt)
    mean = _group_sum(s, k, partition) / count
    mean_n = _per_sample(mean, n, partition)
    if inplace and dims and _channels_last(x):
        # vector_norm over the outer (spatial) axes of a channels_last tensor is slow on
        # CPU: (x - mean)^2 into one buffer, then a sum.
        centered = torch.empty_like(x, dtype=cdt)
        torch.sub(x, mean_n.view(_bshape(x)), out=centered).square_()
        var = _group_sum(centered.sum(dims), k, partition) / count
        return mean, var, mean_n, centered, count
    centered = x - mean_n.view(_bshape(x))
    if not dims:
        sq = centered.square()
    else:
        sq = torch.linalg.vector_norm(centered, 2, dims).square()
    var = _group_sum(sq, k, partition) / count
    return mean, var, mean_n, centered, count


def _affine_rows(rstd, weight, bias, n, partition, x):
    scale = rstd if weight is None else rstd * weight
    scale_n = _per_sample(scale, n, partition).view(_bshape(x))
    shift_n = None if bias is None else _per_sample(bias, n, partition).view(_bshape(x))
    return scale_n, shift_n


def _batch_groups_plain(x, weight, bias, k, partition, eps, cdt):
    """The reduction path as plain differentiable operations (graph tracers, double
    backward). Returns ``(y, mean, var)``."""
    mean, var, _, centered, _ = group_moments(x, k, partition, cdt)
    rstd = torch.rsqrt(var + eps)
    scale_n, shift_n = _affine_rows(rstd, weight, bias, x.shape[0], partition, x)
    # centered * scale + shift in two roundings, as the eager path (not addcmul: slow on
    # CPU with broadcast operands), so traced and eager results agree bit for bit
    y = centered * scale_n if shift_n is None else centered * scale_n + shift_n
    return y.to(x.dtype), mean, var


class _BatchGroups(torch.autograd.Function):
    """``"batch"`` mode with the closed-form BatchNorm backward per group along the batch
    axis (eager only). Saves x (not a float32 copy), the per-sample means (the (K, C)
    group means on the :func:`_cl_groups` path) and the group inverse standard
    deviations."""

    @staticmethod
    def forward(ctx, x, weight, bias, k, partition, eps, cdt):
        if _cl_groups(x, k, partition) is not None:
            return _cl_forward(ctx, x, weight, bias, k, partition, eps, cdt)
        mean, var, mean_n, buf, count = group_moments(x, k, partition, cdt, inplace=True)
        rstd = torch.rsqrt(var + eps)
        n = x.shape[0]
        scale_n, shift_n = _affine_rows(rstd, weight, bias, n, partition, x)
        if _channels_last(x) and x.ndim > 2:
            # buf holds squares: y = x * scale + (shift - mean * scale), as F.batch_norm's
            # CPU kernel computes it.
            offset = -mean_n.view(_bshape(x)) * scale_n
            if shift_n is not None:
                offset = offset + shift_n
            y = torch.addcmul(offset, x, scale_n, out=buf)
        elif shift_n is None:
            y = buf.mul_(scale_n)
        else:
            # two in-place passes, not addcmul: with broadcast (N, C, 1, 1) operands along
            # an NCHW batch's inner (spatial) axes addcmul is about 3x slower on CPU. The
            # same two roundings as _batch_groups_plain.
            y = buf.mul_(scale_n).add_(shift_n)
        ctx.save_for_backward(x, weight, bias, mean_n, rstd)
        ctx.k, ctx.partition, ctx.eps, ctx.cdt, ctx.count = k, partition, eps, cdt, count
        ctx.cl = False
        ctx.mark_non_differentiable(mean, var)
        return y.to(x.dtype), mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, bias, mean_n, rstd = ctx.saved_tensors
        k, partition, cdt, count = ctx.k, ctx.partition, ctx.cdt, ctx.count
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain math
            return _double_backward(ctx, x, weight, bias, dy)
        if ctx.cl:
            return _cl_backward(ctx, x, weight, bias, mean_n, rstd, dy)
        n = x.shape[0]
        dims = tuple(range(2, x.ndim))
        bs = _bshape(x)
        buf = torch.empty_like(x, dtype=cdt)  # the one activation-sized buffer
        # (x - mean) * dy, written into the buffer (mixed dtypes: x and dy may be
        # float16/bfloat16, the buffer and the means float32)
        torch.sub(x, mean_n.view(bs), out=buf).mul_(dy)
        s_dyc = _group_sum(buf.sum(dims) if dims else buf, k, partition)
        s_dy = _group_sum(dy.sum(dims, dtype=cdt) if dims else dy.to(cdt), k, partition)
        a = rstd if weight is None else rstd * weight
        # dx = a * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat = (x - mean) * rstd,
        #    = a * dy + b1 * x + b0 with per-group b1, b0:
        b1 = -a * rstd * rstd * s_dyc / count
        b1_n = _per_sample(b1, n, partition)
        b0_n = _per_sample(-a * s_dy / count, n, partition) - b1_n * mean_n
        if _channels_last(x):  # the inner axis is the channels: one vectorized pass
            torch.addcmul(b0_n.view(bs), x, b1_n.view(bs), out=buf)
        else:
            # not addcmul(b0, x, b1): with two broadcast (N, C, 1, 1) operands along an
            # NCHW batch's inner (spatial) axes it is several times slower on CPU
            torch.mul(x, b1_n.view(bs), out=buf).add_(b0_n.view(bs))
        buf.addcmul_(dy, _per_sample(a, n, partition).view(bs))
        return _grads(ctx, x, weight, bias, buf, s_dyc * rstd, s_dy)


def _grads(ctx, x, weight, bias, dx, dw, db):
    """:meth:`_BatchGroups.backward`'s return value: each gradient in its input's dtype,
    None where the input needs none."""
    need = ctx.needs_input_grad
    return (dx.to(x.dtype) if need[0] else None,
            dw.to(weight.dtype) if weight is not None and need[1] else None,
            db.to(bias.dtype) if bias is not None and need[2] else None,
            None, None, None, None)


def _cl_groups(x: torch.Tensor, k: int, partition: str):
    """For a channels_last batch that is a multiple of K: a view of x's memory whose axes
    separate the groups along the batch axis, the axes to reduce (innermost first) and the
    shape that broadcasts a (K, C) per-group row against the view. None otherwise.

    Contiguous groups: (N, C, *S) -> (K, M*S, C), reduce axis 1, rows (K, 1, C).
    Strided groups: (N, C, *S) -> (M, K, S, C), reduce axes 2 then 0, rows (1, K, 1, C).
    """
    n, c = x.shape[0], x.shape[1]
    if x.ndim < 3 or n % k or not _channels_last(x):
        return None
    xl = x.movedim(1, -1)  # (N, *S, C), contiguous
    if partition == "contiguous":
        return xl.reshape(k, -1, c), (1,), (k, 1, c)
    return xl.reshape(n // k, k, -1, c), (2, 0), (1, k, 1, c)


def _outer_sum(v: torch.Tensor, dims: tuple, c: int, dtype=None) -> torch.Tensor:
    """(K, C) sums of a :func:`_cl_groups` view over its reduced axes."""
    for d in dims:
        v = v.sum(d, dtype=dtype)
    return v.reshape(-1, c)


def _cl_forward(ctx, x, weight, bias, k, partition, eps, cdt):
    """:meth:`_BatchGroups.forward` on a channels_last batch that is a multiple of K: four
    passes over the activations (sum; squared deviations from the group mean, one fused
    kernel; their sum; ``x * scale + offset``), the output written into the one buffer."""
    c = x.shape[1]
    xv, dims, rows = _cl_groups(x, k, partition)
    count = float(xv.numel() // (k * c))
    mean = _outer_sum(xv, dims, c, cdt) / count
    buf = torch.empty_like(x, dtype=cdt)  # channels_last, as x
    bv = _cl_groups(buf, k, partition)[0]
    # (x - mean)^2 into the buffer (computed in cdt)
    torch.sub(xv, mean.view(rows), out=bv).square_()
    var = _outer_sum(bv, dims, c) / count
    rstd = torch.rsqrt(var + eps)
    scale = rstd if weight is None else rstd * weight
    offset = -mean * scale if bias is None else bias - mean * scale
    # y = x * scale + (shift - mean * scale), as F.batch_norm's CPU kernel computes it
    torch.addcmul(offset.view(rows), xv, scale.view(rows), out=bv)
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.k, ctx.partition, ctx.eps, ctx.cdt, ctx.count = k, partition, eps, cdt, count
    ctx.cl = True
    ctx.mark_non_differentiable(mean, var)
    return buf.to(x.dtype), mean, var


def _cl_backward(ctx, x, weight, bias, mean, rstd, dy):
    """:meth:`_BatchGroups.backward` on a channels_last batch that is a multiple of K (the
    closed form; ``mean`` is the (K, C) group means)."""
    k, partition, cdt, count = ctx.k, ctx.partition, ctx.cdt, ctx.count
    c = x.shape[1]
    xv, dims, rows = _cl_groups(x, k, partition)
    dyv = dy.movedim(1, -1).reshape(xv.shape)  # a view when dy is channels_last, as x
    buf = torch.empty_like(x, dtype=cdt)
    bv = _cl_groups(buf, k, partition)[0]
    # (x - mean) * dy, written into the buffer (as in _BatchGroups.backward)
    torch.sub(xv, mean.view(rows), out=bv).mul_(dyv)
    s_dyc = _outer_sum(bv, dims, c)
    s_dy = _outer_sum(dyv, dims, c, cdt)
    a = rstd if weight is None else rstd * weight
    # dx = a * dy + b1 * x + b0, as in _BatchGroups.backward
    b1 = -a * rstd * rstd * s_dyc / count
    b0 = -a * s_dy / count - b1 * mean
    torch.addcmul(b0.view(rows), xv, b1.view(rows), out=bv)
    bv.addcmul_(dyv, a.view(rows))
    return _grads(ctx, x, weight, bias, buf, s_dyc * rstd, s_dy)


def _double_backward(ctx, x, weight, bias, dy):
    inputs = [t for t, need in zip((x, weight, bias), ctx.needs_input_grad[:3]) if need]
    with torch.enable_grad():
        y, _, _ = _batch_groups_plain(x, weight, bias, ctx.k, ctx.partition, ctx.eps, ctx.cdt)
        grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
    out = [next(grads) if need else None for need in ctx.needs_input_grad[:3]]
    return (*out, None, None, None, None)


@torch.no_grad()
def update_running(running_mean, running_var, mean, var, count, momentum: float) -> None:
    """BatchNorm's running-statistics update per group along the batch axis, from the
    group means and biased variances ((K, C), or (C,) for one group) and the number of
    values per channel in each group (a float, or (K, 1)); the running variance is the
    unbiased one, as BatchNorm's. The layers' batch checks guarantee count >= 2."""
    unbiased = var * (count / (count - 1))
    running_mean.lerp_(mean.to(running_mean.dtype), momentum)
    running_var.lerp_(unbiased.to(running_var.dtype), momentum)


def _fusable(x: torch.Tensor, k: int, partition: str) -> bool:
    """Whether the fused path runs: a batch that is a multiple of K, and either a free
    view (one group, or strided groups of an NCHW batch) or a device/tracer where the
    layout copies are cheap."""
    if x.shape[0] % k:
        return False
    if k == 1 or (partition == "strided" and not _channels_last(x)):
        return True
    return x.device.type != "cpu" or graph_mode()


def batch_groups(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    num_groups: int,
    partition: str,
    eps: float,
    cdt: torch.dtype,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    momentum: float = 0.0,
) -> torch.Tensor:
    """``"batch"`` mode: K groups along the batch axis, each its own statistics and
    weight/bias row (``weight``/``bias`` (K, C) in ``cdt``; ``x`` in ``cdt`` or a
    float16/bfloat16 tensor with ``cdt`` float32). Updates the (K, C) running statistics in
    place when given."""
    k = num_groups
    if _fusable(x, k, partition):
        buffers_ok = running_mean is not None and running_mean.dtype == cdt
        y = _fused(
            x, weight, bias, k, partition, eps,
            running_mean if buffers_ok else None, running_var if buffers_ok else None,
            momentum if buffers_ok else 0.0,
        )
        if running_mean is not None and not buffers_ok:
            with torch.no_grad():
                mean, var, *_, count = group_moments(x.detach(), k, partition, cdt)
            update_running(running_mean, running_var, mean, var, count, momentum)
        return y
    grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias)
    )
    if graph_mode():
        y, mean, var = _batch_groups_plain(x, weight, bias, k, partition, eps, cdt)
    elif grad:
        y, mean, var = _BatchGroups.apply(x, weight, bias, k, partition, eps, cdt)
    else:
        with torch.no_grad():
            y, mean, var = _BatchGroups.forward(_NoCtx(), x, weight, bias, k, partition, eps, cdt)
    if running_mean is not None:
        update_running(running_mean, running_var, mean, var, _counts(x, k, cdt), momentum)
    return y


class _NoCtx:
    """Stands in for autograd's ctx when :class:`_BatchGroups` runs without autograd."""

    def save_for_backward(self, *tensors):
        pass

    def mark_non_differentiable(self, *tensors):
        pass


# -- evaluation modes -----------------------------------------------------------------


def _param_rows(p: torch.Tensor | None, group, ndim: int) -> torch.Tensor | None:
    """The weight/bias rows of ``group`` (an int, a 0-d tensor or a per-sample (N,)
    tensor), broadcastable against an (N, C, *S) input."""
    if p is None:
        return None
    if isinstance(group, int):
        return p[group].reshape((1, -1) + (1,) * (ndim - 2))
    rows = p.index_select(0, group.reshape(-1))
    return rows.reshape((rows.shape[0], -1) + (1,) * (ndim - 2))


def _group_row(p: torch.Tensor | None, group) -> torch.Tensor | None:
    """Row ``group`` (an int or a 0-d tensor) of a (K, C) parameter, as a (C,) tensor."""
    if p is None:
        return None
    if isinstance(group, int):
        return p[group]
    return p.index_select(0, group.reshape(1)).reshape(-1)


def single(x: torch.Tensor, weight, bias, *, group, eps: float, cdt: torch.dtype) -> torch.Tensor:
    """``"single"`` mode: each sample its own statistics (over its spatial axes), the
    weight/bias of ``group`` (an int, or one group per sample as an (N,) int64 tensor).
    Plain reductions: mean, centered values, their norm; exportable to ONNX."""
    dims = tuple(range(2, x.ndim))
    size = x[0, 0].numel()
    traced = graph_mode()
    inplace = not traced and not (
        torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in (x, weight, bias))
    )
    cl = not traced and _channels_last(x)
    mean = x.mean(dims, keepdim=True, dtype=cdt)
    if cl and inplace:
        # vector_norm over the outer (spatial) axes of a channels_last tensor is slow on
        # CPU: (x - mean)^2 into the buffer
        # the output is written to, averaged; then x itself is normalized.
        centered = torch.empty_like(x, dtype=cdt)
        torch.sub(x, mean, out=centered).square_()
        var = centered.mean(dims, keepdim=True)
    elif cl:
        var = (x - mean).square().mean(dims, keepdim=True)
    else:
        centered = x - mean
        var = torch.linalg.vector_norm(centered, 2, dims, keepdim=True).square() / size
    scale = torch.rsqrt(var + eps)
    w = _param_rows(weight, group, x.ndim)
    b = _param_rows(bias, group, x.ndim)
    if w is not None:
        scale = scale * w
    out = centered if inplace else None
    if cl:  # y = x * scale + (b - mean * scale), as F.batch_norm's CPU kernel
        offset = -mean * scale if b is None else b - mean * scale
        y = torch.addcmul(offset, x, scale, out=out)
    elif b is None:
        y = centered.mul_(scale) if inplace else centered * scale
    elif inplace:  # not addcmul with broadcast operands: slow on CPU along inner axes
        y = centered.mul_(scale).add_(b)
    else:  # the same arithmetic out of place (autograd, tracers)
        y = centered * scale + b
    return y.to(x.dtype)


def set_stats(x: torch.Tensor, weight, bias, *, group, eps: float) -> torch.Tensor:
    """``"set"`` mode: one set of statistics over the whole batch, group ``group``'s
    weight/bias (an int or a 0-d tensor; one fused batch_norm)."""
    return F.batch_norm(
        x, None, None, _group_row(weight, group), _group_row(bias, group), True, 0.0, eps
    )


def running(x: torch.Tensor, weight, bias, running_mean, running_var, *, group, eps: float,
            cdt: torch.dtype):
    """``"running"`` mode: group ``group``'s running statistics and weight/bias."""
    rm = _group_row(running_mean, group).to(cdt)
    rv = _group_row(running_var, group).to(cdt)
    return F.batch_norm(
        x, rm, rv, _group_row(weight, group), _group_row(bias, group), False, 0.0, eps
    )
