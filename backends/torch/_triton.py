"""Fused Triton kernels for LocalNorm on CUDA: the one sanctioned second implementation of
the math (:mod:`localnorm._agnostic`), held to the NumPy reference by the conformance
subjects ``torch-cuda`` (on a GPU) and ``torch-triton`` (Triton's interpreter on CPU).

Chosen by :func:`enabled`: CUDA tensors of float32/float16/bfloat16 with float32
statistics when Triton imports, unless ``LOCALNORM_TRITON=0``; CPU tensors only when
``LOCALNORM_TRITON=1`` and ``TRITON_INTERPRET=1`` (the interpreter subject; slow, for
tests). Everything else runs the core's path in :mod:`._functional`.

The kernels see an activation as (N, C, S): the batch axis, the channels and the
spatial axes flattened into one (free for NCHW and channels_last, whose spatial axes
collapse to one stride; any other layout is copied once). Samples belong to the K groups
along the batch axis as :func:`localnorm.group_index` says (ragged batches included), a
group's members found from its index by integer arithmetic: no index tensor, no host
synchronization.

- ``_stats_kernel``: one program per (group, block of channels, split of the group's
  samples) merges tiles of (samples' spatial values x channels) by Chan, Golub and
  LeVeque's pairwise update, each tile's own moments by the corrected two-pass (the
  core's algorithm, per tile instead of per sample: the error scales with the data's
  spread, not its offset); ``_merge_kernel`` merges the splits into the (K, C) float32
  mean, biased variance and inverse standard deviation. One read of x.
- ``_normalize_kernel``: ``(x - mean) * (gamma * rstd) + beta`` per sample, the
  statistics and parameter rows chosen per sample (the group along the batch axis, the
  sample itself for "single" evaluation, one row for "set"/"running"). One read, one
  write.
- ``_grad_sums_kernel`` and ``_dx_kernel``: the closed-form backward of
  :func:`~localnorm._agnostic.batch_vjp` (sums of dy and dy * (x - mean) per group and
  channel, then dx elementwise). Two reads of x and dy, one write.

Registered as the custom ops ``localnorm::triton_batch`` and
``localnorm::triton_batch_backward`` (with fake implementations and autograd), so
``torch.compile(fullgraph=True)`` keeps them as single nodes; they synchronize nothing
with the host, as CUDA graph capture needs (not yet tried on a GPU). Evaluation ("single", "set", "running") runs on the same kernels (``"set"`` is one
group of the whole batch, ``"single"`` a group per sample), registered as
``localnorm::triton_eval`` and ``localnorm::triton_eval_backward``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os

import torch

__all__ = ["AVAILABLE", "batch", "enabled", "eval_forward", "group_counts", "launches",
           "switched_off"]

#: Activation dtypes the kernels take (statistics and the affine step in float32).
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: Set by :func:`switched_off` (benchmarks: the same layers without the kernels).
_off = False

#: How many times the kernels' custom ops ran in this process (tests read it to prove that
#: the dispatch chose them).
launches = {"batch": 0, "batch_backward": 0, "eval": 0, "eval_backward": 0}


#: Whether Triton imports here (it ships with PyTorch's CUDA builds; CPU machines install
#: the wheel for the interpreter).
AVAILABLE = importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("LOCALNORM_TRITON") == "1" and os.environ.get("TRITON_INTERPRET") == "1"


def enabled(x: torch.Tensor, cdt: torch.dtype) -> bool:
    """Whether the kernels run for ``x`` (statistics in ``cdt``): see the module
    docstring. ``LOCALNORM_TRITON=0`` turns them off, ``=1`` with ``TRITON_INTERPRET=1``
    runs them on CPU tensors through Triton's interpreter."""
    if cdt != torch.float32 or x.dtype not in DTYPES or x.ndim < 2 or not AVAILABLE:
        return False
    if _off:
        return False
    if x.is_cuda:
        return os.environ.get("LOCALNORM_TRITON") != "0"
    return x.device.type == "cpu" and _interpreting()


@contextlib.contextmanager
def switched_off():
    """The layers run without the kernels (the core's and the native paths) inside the
    block: the benchmarks' "Triton off" rows, in the same process as the kernels' rows."""
    global _off
    before, _off = _off, True
    try:
        yield
    finally:
        _off = before


# -- the kernels ----------------------------------------------------------------------

#: ``triton.language``, set by :func:`_compile`.
tl = None

# Plain functions until :func:`_compile` turns them into Triton JIT functions on first use:
# importing this module imports no Triton (whose LLVM must not load after TensorFlow's in
# one process: the docs build and the Keras suites import both), and the interpreter
# switch (TRITON_INTERPRET, read by ``triton.jit``) is read when the kernels first run.


def _group_of(n, num_groups, q, r, STRIDED: tl.constexpr):
    """The group along the batch axis of sample n (localnorm.group_index)."""
    if STRIDED:
        return n % num_groups
    big = r * (q + 1)
    return tl.where(n < big, n // (q + 1), r + (n - big) // tl.maximum(q, 1))

def _group_span(k, num_groups, q, r, STRIDED: tl.constexpr):
    """Group k along the batch axis as ``(size, first, step)``: its samples are
    ``first + j * step`` for j < size (localnorm.group_sizes and group_index)."""
    size = q + (k < r).to(tl.int32)
    if STRIDED:
        first, step = k, num_groups
    else:
        first, step = k * q + tl.minimum(k, r), 1
    return size, first, step

def _stats_kernel(x_ptr, cnt_ptr, mean_ptr, m2_ptr, C, S, num_groups, q, r,
                  sxn, sxc, sxs, SPLIT: tl.constexpr, STRIDED: tl.constexpr,
                  BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    k = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(2)
    cmask = cs < C
    size, first, step = _group_span(k, num_groups, q, r, STRIDED)
    cnt = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for j in range(split, size, SPLIT):
        base = x_ptr + (first + j * step).to(tl.int64) * sxn
        for s0 in range(0, S, BLOCK_S):
            ss = s0 + tl.arange(0, BLOCK_S)
            smask = ss < S
            mask = smask[:, None] & cmask[None, :]
            v = tl.load(base + ss[:, None].to(tl.int64) * sxs + cs[None, :] * sxc,
                        mask=mask, other=0.0).to(tl.float32)
            bc = tl.sum(smask.to(tl.float32), axis=0)
            # the tile's moments by the corrected two-pass
            m0 = tl.sum(v, axis=0) / bc
            d = tl.where(mask, v - m0[None, :], 0.0)
            sd = tl.sum(d, axis=0)
            bmean = m0 + sd / bc
            bm2 = tl.sum(d * d, axis=0) - sd * sd / bc
            # merged into the running moments (Chan, Golub and LeVeque)
            tot = cnt + bc
            delta = bmean - mean
            mean = mean + delta * (bc / tot)
            m2 = m2 + bm2 + delta * delta * (cnt * bc / tot)
            cnt = tot
    out = (split * num_groups + k) * C + cs
    tl.store(cnt_ptr + out, cnt, mask=cmask)
    tl.store(mean_ptr + out, mean, mask=cmask)
    tl.store(m2_ptr + out, m2, mask=cmask)

def _merge_kernel(cnt_ptr, mean_ptr, m2_ptr, gmean_ptr, gvar_ptr, rstd_ptr, C,
                  num_groups, eps, SPLIT: tl.constexpr, BLOCK_C: tl.constexpr):
    k = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cs < C
    cnt = tl.zeros([BLOCK_C], tl.float32)
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for split in range(SPLIT):
        at = (split * num_groups + k) * C + cs
        bc = tl.load(cnt_ptr + at, mask=cmask, other=0.0)
        bmean = tl.load(mean_ptr + at, mask=cmask, other=0.0)
        bm2 = tl.load(m2_ptr + at, mask=cmask, other=0.0)
        tot = cnt + bc
        # an empty split (or group: N < K) adds nothing; its mean and variance are 0
        safe = tl.where(tot > 0, tot, 1.0)
        delta = bmean - mean
        mean = mean + delta * (bc / safe)
        m2 = m2 + bm2 + delta * delta * (cnt * bc / safe)
        cnt = tot
    var = tl.maximum(m2, 0.0) / tl.where(cnt > 0, cnt, 1.0)
    out = k * C + cs
    tl.store(gmean_ptr + out, mean, mask=cmask)
    tl.store(gvar_ptr + out, var, mask=cmask)
    tl.store(rstd_ptr + out, 1.0 / tl.sqrt_rn(var + eps), mask=cmask)

def _normalize_kernel(x_ptr, y_ptr, mean_ptr, rstd_ptr, w_ptr, b_ptr, row_ptr, C, S,
                      num_groups, q, r, sxn, sxc, sxs, syn, syc, sys, sw, srow,
                      STAT_ROWS: tl.constexpr, PARAM_ROWS: tl.constexpr,
                      STRIDED: tl.constexpr, BLOCK_S: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    """Rows per sample n: STAT_ROWS 0 the group of n along the batch axis, 1 n itself
    ("single"); PARAM_ROWS 0 the group of n, else ``row_ptr[n * srow]`` (one row for
    srow=0, else a row per sample)."""
    n = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ss = tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S)
    cmask = cs < C
    mask = (ss < S)[:, None] & cmask[None, :]
    g = _group_of(n, num_groups, q, r, STRIDED)
    if STAT_ROWS == 0:
        srow_i = g
    else:
        srow_i = n
    if PARAM_ROWS == 0:
        prow = g
    else:
        prow = tl.load(row_ptr + n * srow)
    mean = tl.load(mean_ptr + srow_i * C + cs, mask=cmask, other=0.0)
    rstd = tl.load(rstd_ptr + srow_i * C + cs, mask=cmask, other=0.0)
    w = tl.load(w_ptr + prow * sw + cs, mask=cmask, other=0.0)
    b = tl.load(b_ptr + prow * sw + cs, mask=cmask, other=0.0)
    scale = w * rstd
    offs = ss[:, None].to(tl.int64)
    v = tl.load(x_ptr + n.to(tl.int64) * sxn + offs * sxs + cs[None, :] * sxc,
                mask=mask, other=0.0).to(tl.float32)
    y = (v - mean[None, :]) * scale[None, :] + b[None, :]
    tl.store(y_ptr + n.to(tl.int64) * syn + offs * sys + cs[None, :] * syc,
             y.to(y_ptr.dtype.element_ty), mask=mask)

def _grad_sums_kernel(x_ptr, dy_ptr, mean_ptr, sdy_ptr, sdyd_ptr, C, S, num_groups, q, r,
                      sxn, sxc, sxs, sdn, sdc, sds, SPLIT: tl.constexpr,
                      STRIDED: tl.constexpr, BLOCK_S: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    k = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(2)
    cmask = cs < C
    size, first, step = _group_span(k, num_groups, q, r, STRIDED)
    mean = tl.load(mean_ptr + k * C + cs, mask=cmask, other=0.0)
    s_dy = tl.zeros([BLOCK_C], tl.float32)
    s_dyd = tl.zeros([BLOCK_C], tl.float32)
    for j in range(split, size, SPLIT):
        n = (first + j * step).to(tl.int64)
        for s0 in range(0, S, BLOCK_S):
            ss = s0 + tl.arange(0, BLOCK_S)
            mask = (ss < S)[:, None] & cmask[None, :]
            offs = ss[:, None].to(tl.int64)
            v = tl.load(x_ptr + n * sxn + offs * sxs + cs[None, :] * sxc, mask=mask,
                        other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + n * sdn + offs * sds + cs[None, :] * sdc, mask=mask,
                         other=0.0).to(tl.float32)
            s_dy += tl.sum(dy, axis=0)
            s_dyd += tl.sum(tl.where(mask, dy * (v - mean[None, :]), 0.0), axis=0)
    out = (split * num_groups + k) * C + cs
    tl.store(sdy_ptr + out, s_dy, mask=cmask)
    tl.store(sdyd_ptr + out, s_dyd, mask=cmask)

def _dx_kernel(x_ptr, dy_ptr, dx_ptr, mean_ptr, rstd_ptr, w_ptr, sdy_ptr, sdyd_ptr, C, S,
               num_groups, q, r, sxn, sxc, sxs, sdn, sdc, sds, son, soc, sos, sw,
               STRIDED: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0)
    cs = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ss = tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S)
    cmask = cs < C
    mask = (ss < S)[:, None] & cmask[None, :]
    g = _group_of(n, num_groups, q, r, STRIDED)
    count = ((q + (g < r).to(tl.int32)) * S).to(tl.float32)
    mean = tl.load(mean_ptr + g * C + cs, mask=cmask, other=0.0)
    rstd = tl.load(rstd_ptr + g * C + cs, mask=cmask, other=0.0)
    a = tl.load(w_ptr + g * sw + cs, mask=cmask, other=0.0) * rstd
    b1 = -a * rstd * rstd * tl.load(sdyd_ptr + g * C + cs, mask=cmask, other=0.0) / count
    b0 = -a * tl.load(sdy_ptr + g * C + cs, mask=cmask, other=0.0) / count
    nn = n.to(tl.int64)
    offs = ss[:, None].to(tl.int64)
    v = tl.load(x_ptr + nn * sxn + offs * sxs + cs[None, :] * sxc, mask=mask,
                other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + nn * sdn + offs * sds + cs[None, :] * sdc, mask=mask,
                 other=0.0).to(tl.float32)
    dx = dy * a[None, :] + ((v - mean[None, :]) * b1[None, :] + b0[None, :])
    tl.store(dx_ptr + nn * son + offs * sos + cs[None, :] * soc,
             dx.to(dx_ptr.dtype.element_ty), mask=mask)



_KERNELS = ('_group_of', '_group_span', '_stats_kernel', '_merge_kernel', '_normalize_kernel', '_grad_sums_kernel', '_dx_kernel')
_compiled = False


def _compile() -> None:
    """Import Triton and make the kernels above JIT functions (once)."""
    global _compiled, tl
    if _compiled:
        return
    import triton
    import triton.language

    tl = triton.language
    namespace = globals()
    for name in _KERNELS:
        namespace[name] = triton.jit(namespace[name])
    _compiled = True


def _pow2(v: int) -> int:
    """The smallest power of two >= v (1 for v <= 1)."""
    return 1 << max(int(v) - 1, 0).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# -- launching ------------------------------------------------------------------------

def _ncs(t: torch.Tensor):
    """``t`` as (N, C, S) strides ``(sn, sc, ss)`` when its spatial axes collapse to one
    stride (NCHW and channels_last do), else None."""
    shape, stride = t.shape, t.stride()
    sizes = [(shape[i], stride[i]) for i in range(2, t.ndim) if shape[i] != 1]
    for (_, outer), (size, inner) in itertools.pairwise(sizes):
        if outer != inner * size:
            return None
    return stride[0], stride[1], (sizes[-1][1] if sizes else 1)


def _view(t: torch.Tensor):
    """``(t, strides)`` with ``t`` copied once to a contiguous layout when its spatial
    axes do not collapse."""
    strides = _ncs(t)
    if strides is None:
        t = t.contiguous()
        strides = _ncs(t)
    return t, strides


def _blocks(strides, c: int, s: int):
    """Tile sizes (spatial, channels): a tile spans the contiguous axis."""
    if strides[1] == 1 and c > 1:  # channels_last: channels are contiguous
        block_c = min(_pow2(c), 64)
        block_s = max(min(_pow2(s), 4096 // block_c), 1)
    else:
        block_s = min(_pow2(s), 1024)
        block_c = max(min(_pow2(c), 4096 // block_s, 16), 1)
    return block_s, block_c


def _splits(n: int, k: int, c_blocks: int) -> int:
    """How many programs share one group's samples: enough programs to fill a GPU (a few
    hundred), never more than a group's samples."""
    members = max(-(-n // k), 1)
    want = max(512 // max(k * c_blocks, 1), 1)
    return int(min(_pow2(want), _pow2(members), 64))


def _stats(x, strides, num_groups: int, strided: bool, eps: float):
    """(K, C) float32 mean, biased variance and inverse standard deviation of the groups
    along the batch axis of (N, C, S)-strided x."""
    _compile()
    n, c = x.shape[0], x.shape[1]
    s = x.numel() // max(n * c, 1) if n * c else 0
    q, r = divmod(n, num_groups)
    block_s, block_c = _blocks(strides, c, s)
    c_blocks = _cdiv(c, block_c)
    split = _splits(n, num_groups, c_blocks)
    part = torch.empty((3, split, num_groups, c), dtype=torch.float32, device=x.device)
    _stats_kernel[(num_groups, c_blocks, split)](
        x, part[0], part[1], part[2], c, s, num_groups, q, r, *strides, SPLIT=split,
        STRIDED=strided, BLOCK_S=block_s, BLOCK_C=block_c)
    mean, var, rstd = (torch.empty((num_groups, c), dtype=torch.float32, device=x.device)
                       for _ in range(3))
    _merge_kernel[(num_groups, c_blocks)](
        part[0], part[1], part[2], mean, var, rstd, c, num_groups, eps, SPLIT=split,
        BLOCK_C=block_c)
    return mean, var, rstd, (block_s, block_c, s, q, r)


def _normalize(x, strides, mean, rstd, weight, bias, rows, *, num_groups: int, strided: bool,
               stat_rows: int, param_rows: int, blocks):
    _compile()
    n, c = x.shape[0], x.shape[1]
    block_s, block_c, s, q, r = blocks
    y = torch.empty_like(x)
    ystrides = _ncs(y)
    if rows is None:
        rows = mean  # not read (no row index): any pointer
    srow = 0 if rows.numel() == 1 else 1
    grid = (n, _cdiv(c, block_c), _cdiv(s, block_s))
    _normalize_kernel[grid](
        x, y, mean, rstd, weight, bias, rows, c, s, num_groups, q, r, *strides, *ystrides,
        0 if weight.shape[0] == 1 else c, srow, STAT_ROWS=stat_rows, PARAM_ROWS=param_rows,
        STRIDED=strided, BLOCK_S=block_s, BLOCK_C=block_c)
    return y


def _batch_impl(x, weight, bias, num_groups: int, strided: bool, eps: float):
    launches["batch"] += 1
    xv, strides = _view(x)
    mean, var, rstd, blocks = _stats(xv, strides, num_groups, strided, eps)
    y = _normalize(xv, strides, mean, rstd, weight.contiguous(), bias.contiguous(), None,
                   num_groups=num_groups, strided=strided, stat_rows=0, param_rows=0,
                   blocks=blocks)
    if y.stride() != x.stride():  # x was copied to a collapsible layout
        y = torch.empty_like(x).copy_(y)
    return y, mean, var, rstd


def _batch_backward_impl(dy, x, weight, mean, rstd, num_groups: int, strided: bool):
    launches["batch_backward"] += 1
    _compile()
    xv, xs = _view(x)
    dyv, ds = _view(dy)
    n, c = xv.shape[0], xv.shape[1]
    s = xv.numel() // max(n * c, 1) if n * c else 0
    q, r = divmod(n, num_groups)
    block_s, block_c = _blocks(xs, c, s)
    c_blocks = _cdiv(c, block_c)
    split = _splits(n, num_groups, c_blocks)
    part = torch.empty((2, split, num_groups, c), dtype=torch.float32, device=x.device)
    _grad_sums_kernel[(num_groups, c_blocks, split)](
        xv, dyv, mean, part[0], part[1], c, s, num_groups, q, r, *xs, *ds, SPLIT=split,
        STRIDED=strided, BLOCK_S=block_s, BLOCK_C=block_c)
    s_dy, s_dyd = part[0].sum(dim=0), part[1].sum(dim=0)
    dx = torch.empty_like(xv)
    weight = weight.contiguous()
    _dx_kernel[(n, c_blocks, _cdiv(s, block_s))](
        xv, dyv, dx, mean, rstd, weight, s_dy, s_dyd, c, s, num_groups, q, r, *xs, *ds,
        *_ncs(dx), 0 if weight.shape[0] == 1 else c, STRIDED=strided, BLOCK_S=block_s,
        BLOCK_C=block_c)
    if dx.stride() != x.stride():
        dx = torch.empty_like(x).copy_(dx)
    dgamma, dbeta = s_dyd * rstd, s_dy
    if weight.shape[0] == 1 and num_groups > 1:  # one row shared by the groups (Ghost BN)
        dgamma, dbeta = dgamma.sum(0, keepdim=True), dbeta.sum(0, keepdim=True)
    return dx, dgamma, dbeta


# -- custom operators -----------------------------------------------------------------

@torch.library.custom_op("localnorm::triton_batch", mutates_args=())
def _batch_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, num_groups: int,
              strided: bool, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                  torch.Tensor]:
    return _batch_impl(x, weight, bias, num_groups, strided, eps)


@_batch_op.register_fake
def _(x, weight, bias, num_groups, strided, eps):
    stats = x.new_empty((num_groups, x.shape[1]), dtype=torch.float32)
    return torch.empty_like(x), stats, stats.clone(), stats.clone()


@torch.library.custom_op("localnorm::triton_batch_backward", mutates_args=())
def _batch_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                       mean: torch.Tensor, rstd: torch.Tensor, num_groups: int,
                       strided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _batch_backward_impl(dy, x, weight, mean, rstd, num_groups, strided)


@_batch_backward_op.register_fake
def _(dy, x, weight, mean, rstd, num_groups, strided):
    rows = x.new_empty(weight.shape, dtype=torch.float32)
    return torch.empty_like(x), rows, rows.clone()


def _setup(ctx, inputs, output):
    x, weight, bias, num_groups, strided, eps = inputs
    _, mean, _, rstd = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.num_groups, ctx.strided, ctx.eps = num_groups, strided, eps
    ctx.mark_non_differentiable(output[1], output[2], output[3])


def _backward(ctx, dy, _dmean, _dvar, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    need = ctx.needs_input_grad[:3]
    if torch.is_grad_enabled():
        # create_graph=True: differentiate the core's plain forward (as _functional._Batch)
        from . import _functional as fn

        layout = {"axis": 1, "num_groups": ctx.num_groups,
                  "partition": "strided" if ctx.strided else "contiguous"}
        inputs = [t for t, want in zip((x, weight, bias), need) if want]
        with torch.enable_grad():
            y = fn.core.batch_forward(fn.xp, x, weight, bias, eps=ctx.eps, **layout)[0]
            grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
        dx, dw, db = (next(grads) if want else None for want in need)
        return dx, dw, db, None, None, None
    dx, dw, db = _batch_backward_op(dy, x, weight, mean, rstd, ctx.num_groups, ctx.strided)
    return (dx if need[0] else None, dw if need[1] else None, db if need[2] else None,
            None, None, None)


_batch_op.register_autograd(_backward, setup_context=_setup)


@torch.library.custom_op("localnorm::triton_eval", mutates_args=())
def _eval_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor,
             running_mean: torch.Tensor | None, running_var: torch.Tensor | None, mode: str,
             eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, mean, rstd)``: the statistics rows used, (N, C) for "single", else (1, C)."""
    launches["eval"] += 1
    xv, strides = _view(x)
    n = xv.shape[0]
    if mode == "running":
        mean = running_mean.index_select(0, rows[:1]).float()
        rstd = torch.rsqrt(running_var.index_select(0, rows[:1]).float() + eps)
        c, s = xv.shape[1], xv.numel() // max(n * xv.shape[1], 1)
        blocks = (*_blocks(strides, c, s), s, n, 0)
        stat_rows = 0  # one group: every sample reads row 0
        num_groups = 1
    else:
        num_groups = n if mode == "single" else 1
        mean, _, rstd, blocks = _stats(xv, strides, num_groups, False, eps)
        stat_rows = 1 if mode == "single" else 0
    y = _normalize(xv, strides, mean, rstd, weight.contiguous(), bias.contiguous(),
                   rows.contiguous(), num_groups=num_groups, strided=False,
                   stat_rows=stat_rows, param_rows=2, blocks=blocks)
    if y.stride() != x.stride():
        y = torch.empty_like(x).copy_(y)
    return y, mean, rstd


@_eval_op.register_fake
def _(x, weight, bias, rows, running_mean, running_var, mode, eps):
    stats = x.new_empty((x.shape[0] if mode == "single" else 1, x.shape[1]),
                        dtype=torch.float32)
    return torch.empty_like(x), stats, stats.clone()


@torch.library.custom_op("localnorm::triton_eval_backward", mutates_args=())
def _eval_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                      rows: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                      mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) of evaluation: "set" is one group of the whole batch and
    "single" a group per sample (the batch backward kernels, each sample's weight row),
    "running" a fixed affine map of x; the weight rows' gradients are summed into the
    rows that were used."""
    launches["eval_backward"] += 1
    n, c = x.shape[0], x.shape[1]
    per_sample = rows if rows.numel() == n else rows[:1].expand(n)
    if mode == "running":
        w = weight.index_select(0, rows[:1] if weight.shape[0] > 1 else rows[:1] * 0)
        scale = (w * rstd).reshape((1, c) + (1,) * (x.ndim - 2))
        dx = (dy.to(torch.float32) * scale).to(x.dtype)
        _compile()
        xv, xs = _view(x)
        dyv, ds = _view(dy)
        s = xv.numel() // max(n * c, 1)
        block_s, block_c = _blocks(xs, c, s)
        sums = torch.empty((2, 1, 1, c), dtype=torch.float32, device=x.device)
        _grad_sums_kernel[(1, _cdiv(c, block_c), 1)](
            xv, dyv, mean.contiguous(), sums[0], sums[1], c, s, 1, n, 0, *xs, *ds, SPLIT=1,
            STRIDED=False, BLOCK_S=block_s, BLOCK_C=block_c)
        dw_rows, db_rows = sums[1, 0] * rstd, sums[0, 0].clone()
    elif mode == "set":
        w = weight.index_select(0, rows[:1] if weight.shape[0] > 1 else rows[:1] * 0)
        dx, dw_rows, db_rows = _batch_backward_impl(dy, x, w, mean, rstd, 1, False)
    else:
        w = (weight.index_select(0, per_sample) if weight.shape[0] > 1
             else weight.expand(n, c).contiguous())
        dx, dw_rows, db_rows = _batch_backward_impl(dy, x, w, mean, rstd, n, False)
    if weight.shape[0] == 1:  # one row shared by the groups
        return dx, dw_rows.sum(0, keepdim=True), db_rows.sum(0, keepdim=True)
    index = per_sample if mode == "single" else rows[:1]  # the rows dw_rows belong to
    dw = torch.zeros_like(weight, dtype=torch.float32).index_add_(0, index, dw_rows)
    db = torch.zeros_like(weight, dtype=torch.float32).index_add_(0, index, db_rows)
    return dx, dw, db


@_eval_backward_op.register_fake
def _(dy, x, weight, rows, mean, rstd, mode):
    grads = x.new_empty(weight.shape, dtype=torch.float32)
    return torch.empty_like(x), grads, grads.clone()


def _eval_setup(ctx, inputs, output):
    x, weight, bias, rows, _, _, mode, eps = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, rows, mean, rstd)
    ctx.mode, ctx.eps = mode, eps
    ctx.mark_non_differentiable(mean, rstd)


def _eval_backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, rows, mean, rstd = ctx.saved_tensors
    need = ctx.needs_input_grad[:3]
    if torch.is_grad_enabled():
        # create_graph=True: differentiate the core's plain expressions
        from . import _functional as fn

        inputs = [t for t, want in zip((x, weight, bias), need) if want]
        with torch.enable_grad():
            group = rows if rows.numel() == x.shape[0] and ctx.mode == "single" \
                else int(rows[0])
            if ctx.mode == "running":
                shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
                w, b = (p[group if p.shape[0] > 1 else 0].reshape(shape) for p in (weight, bias))
                y = (x - mean.reshape(shape)) * (rstd.reshape(shape) * w) + b
            else:
                y = fn.core.eval_forward(fn.xp, x, weight, bias, axis=1, mode=ctx.mode,
                                         group=group, eps=ctx.eps)
            grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
        dx, dw, db = (next(grads) if want else None for want in need)
    else:
        dx, dw, db = _eval_backward_op(dy, x, weight, rows, mean, rstd, ctx.mode)
    return (dx if need[0] else None, dw if need[1] else None, db if need[2] else None,
            None, None, None, None, None)


_eval_op.register_autograd(_eval_backward, setup_context=_eval_setup)


# -- entry points ---------------------------------------------------------------------

def batch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, num_groups: int,
          partition: str, eps: float):
    """``"batch"`` mode on the kernels: ``(y, mean, var)``, the (K, C) float32 group
    statistics (biased variance) for the running-statistics update. ``weight``/``bias``:
    float32, (K, C) or one (1, C) row shared by the K groups along the batch axis."""
    y, mean, var, _ = _batch_op(x, weight, bias, num_groups, partition == "strided", eps)
    return y, mean, var


def group_counts(x: torch.Tensor, num_groups: int) -> torch.Tensor:
    """The (K, 1) float32 number of values per channel in each group along the batch axis
    (:func:`localnorm.group_sizes` times the spatial size), made on x's device without a
    host-to-device copy (which would block a CUDA step and break graph capture)."""
    n = x.shape[0]
    q, r = divmod(n, num_groups)
    spatial = x.numel() // max(n * x.shape[1], 1)
    ks = torch.arange(num_groups, device=x.device)[:, None]
    return (q + (ks < r).to(torch.float32)) * spatial


def eval_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, mode: str,
                 group, eps: float, running_mean=None, running_var=None) -> torch.Tensor:
    """``"single"``, ``"set"`` or ``"running"`` evaluation on the kernels (with their
    closed-form backward):
    ``group`` an int, a 0-d tensor or (``"single"``) one group per sample as an (N,)
    integer tensor; ``weight``/``bias`` float32 (K, C) or (1, C)."""
    if isinstance(group, torch.Tensor):
        rows = group.to(device=x.device, dtype=torch.int64).reshape(-1)
    else:
        rows = torch.full((1,), int(group), dtype=torch.int64, device=x.device)
    return _eval_op(x, weight, bias, rows, running_mean, running_var, mode, eps)[0]
