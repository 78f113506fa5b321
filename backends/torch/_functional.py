"""LocalNorm's math on torch tensors: the glue between the layers and the core
(:mod:`localnorm._agnostic`, run on array-api-compat's torch namespace). No validation;
the layers validate.

- ``"batch"`` mode: :class:`_Batch`, a ``torch.autograd.Function`` whose forward is the
  core's :func:`~localnorm._agnostic.batch_forward` and whose backward is the core's
  closed-form :func:`~localnorm._agnostic.batch_vjp`, both ``inplace`` (nothing records
  them; double backward differentiates the core's plain forward). Without autograd the
  core's forward runs directly. Graph tracers (``torch.compile``, export, ``torch.func``)
  run the core's plain forward as differentiable operations. The native fast path: one
  ``F.batch_norm`` over K*C channels where the batch as (N/K, K*C, ...) is a free view
  (one group, strided groups of an NCHW batch); on CUDA, contiguous groups too, through
  one layout copy in and one out. On CUDA the fused Triton kernels of :mod:`._triton`
  run instead (:func:`_kernels`), custom ops that ``torch.compile`` keeps.
- ``"single"``: instance normalization, one ``F.group_norm`` with a group per channel
  (channels_last input and tracers: the core's :func:`~localnorm._agnostic.eval_forward`,
  which exports as plain reductions); ``"set"``: one ``F.batch_norm`` with group ``g``'s
  weight/bias; ``"running"``: ``F.batch_norm`` with group ``g``'s running statistics.

float16/bfloat16 activations: statistics in float32 (the core's compute dtype); x is
read in its own dtype and only x, not a float32 copy, is saved for backward.
"""

from __future__ import annotations

import math
import os
import types

import array_api_compat.torch
import torch
import torch.nn.functional as F

from localnorm import _agnostic as core
from localnorm import _layer

__all__ = ["LOW_PRECISION", "batch_groups", "compute_dtype", "evaluate", "graph_mode",
           "single", "update_running"]

#: Activation dtypes normalized in float32 (AMP).
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _channels_last(x: torch.Tensor) -> bool:
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim)
    try:
        return fmt is not None and x.is_contiguous(memory_format=fmt) and not x.is_contiguous()
    except RuntimeError:  # vmap cannot query memory formats: the NCHW layout
        return False


def _core_view(x: torch.Tensor):
    """``(xv, axis, back)``: x as the core runs it, ``axis`` its channel axis, and
    ``back(y)`` to put the core's output in x's layout. A channels_last batch runs as the
    (N, *S, C) view of its memory, channels on the last axis: per-channel values then
    broadcast along the innermost, contiguous axis. Eager and contiguous (in its memory
    format), the spatial axes are flattened into one, (N, C, S) or (N, S, C), still a
    view: the per-sample reductions then cover one axis, which torch's CPU kernels run in
    0.72-0.86x of the time of two on the bench's channels_last shapes
    (benchmarks/discussion.md)."""
    cl = _channels_last(x)
    xv, axis = (x.movedim(1, -1), x.ndim - 1) if cl else (x, 1)
    if xv.ndim <= 3 or graph_mode() or not xv.is_contiguous():
        return xv, axis, (lambda y: y.movedim(-1, 1)) if cl else (lambda y: y)
    shape = xv.shape
    if cl:
        flat = (shape[0], math.prod(shape[1:-1]), shape[-1])
        return xv.reshape(flat), 2, lambda y: y.reshape(shape).movedim(-1, 1)
    return xv.reshape(shape[:2] + (math.prod(shape[2:]),)), 1, lambda y: y.reshape(shape)


def _sum_of_squares(d: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor | None:
    """``sum(d * d)`` over the trailing ``axes`` of a contiguous ``d`` as one native
    reduction, which writes no squared copy of ``d``; None for other axes (a channels_last
    batch's spatial axes), where ``vector_norm`` is many times slower on CPU than the
    core's own way (it squares ``d`` in place)."""
    if axes != tuple(range(d.ndim - len(axes), d.ndim)) or not d.is_contiguous():
        return None
    return torch.linalg.vector_norm(d, 2, axes, keepdim=True).square()


def _size(x: torch.Tensor, axis: int):
    """A size known only when the program runs: a symbol (``torch.export``'s dynamic
    dimensions) as it is, so the exported program stays general; otherwise a tensor,
    which TorchScript tracing records."""
    size = x.shape[axis]
    return size if isinstance(size, torch.SymInt) else torch.as_tensor(size)


def _segment_sum(v: torch.Tensor, ids: torch.Tensor, k) -> torch.Tensor:
    """Per-group sums of ``v`` (N, ...) for K = ``k`` groups along the batch axis (sample
    i in group ``ids[i]``): the core's sums for a K counted from ``torch.export``'s
    symbolic batch size. The core's int32 ids are read as int64, the index type of ONNX's
    ScatterND, to which ``torch.onnx.export`` turns ``index_add``."""
    return v.new_zeros((k, *v.shape[1:])).index_add(0, ids.long(), v)


#: The namespace the core runs on: array-api-compat's torch namespace, the device read
#: from the tensor itself (which graph tracers follow), sizes known only at run time
#: (``dim_size``, ``batch_size``: see the core's ``Groups``; ``size_max`` for a symbolic
#: one; ``segment_sum`` for a symbolic K), and one native reduction for the core's
#: in-place sum of squares (no squared copy of the activations).
xp = types.SimpleNamespace(
    **vars(array_api_compat.torch), device_of=lambda x: x.device,
    dim_size=_size, batch_size=lambda x: _size(x, 0), sum_of_squares=_sum_of_squares,
    segment_sum=_segment_sum,
    size_max=lambda a, b: torch.sym_max(a, b) if isinstance(a, torch.SymInt)
    else array_api_compat.torch.maximum(a, b))


def _traced() -> bool:
    """Whether TorchScript is tracing or scripting, or a ``torch.func`` transform
    (``vmap``, ``grad``) is running."""
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting()
                or torch._C._are_functorch_transforms_active())


def _vmap_levels(t: torch.Tensor) -> set:
    """The ``torch.func.vmap`` levels that map ``t`` (through any grad wrappers)."""
    f = torch._C._functorch
    levels = set()
    while f.is_functorch_wrapped_tensor(t):
        if f.is_batchedtensor(t):
            levels.add(f.maybe_get_level(t))
        t = f.get_unwrapped(t)
    return levels


def vmapped_over(x: torch.Tensor, state: torch.Tensor) -> bool:
    """Whether a ``torch.func.vmap`` maps ``x`` but not ``state`` (a buffer the layer
    updates in place): the update would write every mapped batch into one buffer."""
    return torch._C._are_functorch_transforms_active() \
        and bool(_vmap_levels(x) - _vmap_levels(state))


def graph_mode() -> bool:
    """Whether a tracer is running: ``torch.compile``/``torch.export``, TorchScript
    tracing or scripting, or a ``torch.func`` transform (``vmap``, ``grad``). Tracers get
    plain differentiable operations (no custom autograd Function, nothing in place) and
    no value-dependent checks."""
    return bool(torch.compiler.is_compiling()) or _traced()


def compute_dtype(x: torch.Tensor, weight: torch.Tensor | None) -> torch.dtype:
    """The dtype of the statistics and the affine step: the core's
    (:func:`~localnorm._agnostic.compute_dtype`)."""
    return core.compute_dtype(xp, x.dtype, *(() if weight is None else (weight.dtype,)))


def _records(*tensors: torch.Tensor) -> bool:
    """Whether autograd records a derivative of an operation on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _layout(k: int, partition: str, axis: int) -> dict:
    return {"axis": axis, "num_groups": k, "partition": partition}


class _Batch(torch.autograd.Function):
    """``"batch"`` mode: the core's forward, its closed-form VJP as the backward. Saves
    x, weight, the (K, C) group means and inverse standard deviations."""

    @staticmethod
    def forward(ctx, x, weight, bias, k, partition, eps, axis):
        y, mean, var, rstd = core.batch_forward(xp, x, weight, bias, eps=eps, inplace=True,
                                                **_layout(k, partition, axis))
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.save_for_forward(x, weight, mean, rstd)
        ctx.layout, ctx.eps = _layout(k, partition, axis), eps
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def jvp(ctx, dx, dweight, dbias, *_):
        """Forward-mode AD (``torch.autograd.forward_ad``): the core's closed-form
        :func:`~localnorm._agnostic.batch_jvp`; a missing tangent is zero."""
        x, weight, mean, rstd = ctx.saved_tensors
        tangents = [torch.zeros_like(p) if t is None else t
                    for t, p in ((dx, x), (dweight, weight), (dbias, weight))]
        dy = core.batch_jvp(xp, x, weight, mean, rstd, *tangents, **ctx.layout)
        return dy.to(x.dtype), None, None

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: differentiate the core's forward
            inputs = [t for t, n in zip((x, weight, bias), need) if n]
            with torch.enable_grad():
                y = core.batch_forward(xp, x, weight, bias, eps=ctx.eps, **ctx.layout)[0]
                grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True))
            dx, dw, db = (next(grads) if n else None for n in need)
        else:
            dx, dw, db = core.batch_vjp(xp, x, weight, mean, rstd, dy, inplace=True,
                                        **ctx.layout)
        return (dx if need[0] else None, dw.to(weight.dtype) if need[1] else None,
                db.to(bias.dtype) if need[2] else None, None, None, None, None)


def _flat(p: torch.Tensor | None) -> torch.Tensor | None:
    # contiguous: a shared row expanded to K groups of one channel flattens to a stride-0
    # view, from which F.batch_norm's CPU backward computes a wrong input gradient
    # (tests/torch/test_shared_row_native.py); a running buffer, contiguous, stays itself.
    return None if p is None else p.reshape(-1).contiguous()


def _native(x: torch.Tensor, k: int, partition: str, copies: bool | None = None):
    """x as the input of one ``F.batch_norm`` call whose K*C channels are the groups'
    (channel k*C + c for group k along the batch axis), and the function that puts that
    call's output back in x's layout; None where the core's path runs. A free view for one
    group and for strided groups of an NCHW batch that is a multiple of K; with ``copies``
    (default: on CUDA) also contiguous groups, through one layout copy in and one out."""
    n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    copies = x.is_cuda if copies is None else copies
    if not isinstance(k, int):  # K counted from torch.export's dynamic batch size
        return None
    if k == 1:
        return x, lambda y: y
    if isinstance(n, torch.SymInt):  # torch.export's dynamic batch: no guard on N % K
        return None
    if n % k or _channels_last(x) or (partition == "contiguous" and not copies):
        # CPU: the copies cost what the fused kernel saves (benchmarks/discussion.md);
        # channels_last: F.batch_norm's CPU kernels lose accuracy (tests/torch/test_paths.py)
        return None
    m = n // k
    if partition == "strided":
        return x.reshape((m, k * c) + spatial), lambda y: y.reshape(x.shape)
    xv = x.reshape((k, m, c) + spatial).transpose(0, 1).reshape((m, k * c) + spatial)
    return xv, lambda y: y.reshape((m, k, c) + spatial).transpose(0, 1).reshape(x.shape)


def _kernels(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
             cdt: torch.dtype):
    """The fused Triton kernels (:mod:`._triton`) and the weight/bias to give them (a row
    of ones and one of zeros without an affine step) when the kernels run for ``x``: CUDA
    tensors (``LOCALNORM_TRITON=0`` turns them off), or CPU tensors under Triton's
    interpreter (``LOCALNORM_TRITON=1`` with ``TRITON_INTERPRET=1``, for tests); not under
    TorchScript or ``torch.func`` transforms. None where they do not run. The one place
    where the CUDA kernels plug in."""
    if not (x.is_cuda or os.environ.get("LOCALNORM_TRITON") == "1"):
        return None
    if _traced() or (weight is not None and weight.dtype != torch.float32):
        return None
    from . import _triton

    if not _triton.enabled(x, cdt):
        return None
    return (_triton, *((weight, bias) if weight is not None else _ones(x, cdt)))


def _ones(x: torch.Tensor, cdt: torch.dtype):
    """weight/bias of no affine step: one (1, C) row of ones and one of zeros."""
    weight = torch.ones((1, x.shape[1]), dtype=cdt, device=x.device)
    return weight, torch.zeros_like(weight)


def batch_groups(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, *,
                 num_groups: int, partition: str, eps: float, cdt: torch.dtype,
                 running_mean: torch.Tensor | None = None,
                 running_var: torch.Tensor | None = None,
                 momentum: float | torch.Tensor = 0.0) -> torch.Tensor:
    """``"batch"`` mode: K groups along the batch axis, each its own statistics and
    weight/bias row (``weight``/``bias`` (K, C) or one shared (1, C) row, in ``cdt``, or
    None for no affine step; ``x`` in ``cdt`` or float16/bfloat16 with ``cdt`` float32).
    Updates the running statistics in place when given: (K, C) rows, one per group, or
    one (1, C) row shared by the groups (:func:`update_running`)."""
    k = num_groups
    fused = _kernels(x, weight, bias, cdt)
    if fused is not None:  # CUDA: the fused Triton kernels (issue 14)
        kernels, weight, bias = fused
        y, mean, var = kernels.batch(x, weight, bias, num_groups=k, partition=partition,
                                     eps=eps)
        if running_mean is not None:
            update_running(running_mean, running_var, mean, var,
                           kernels.group_counts(x, k), momentum)
        return y
    # F.batch_norm updates the buffers with a float momentum (a traced one is a tensor)
    buffers_ok = running_mean is None or (running_mean.dtype == cdt
                                          and isinstance(momentum, float))
    shared = weight is not None and (not isinstance(k, int) or weight.shape[0] != k)
    native = None if shared or not buffers_ok else _native(x, k, partition)
    if native is not None:
        # one F.batch_norm, BatchNorm's own kernel (strided groups, NCHW: forward+backward
        # at BatchNorm2d's time, benchmarks/discussion.md)
        xv, back = native
        rows = (running_mean, running_var)
        if running_mean is not None and running_mean.shape[0] != k:
            # One running row shared by the groups: each group moves its own copy, and the
            # row becomes their mean (the mean of the groups' updates, as update_running).
            rows = tuple(r.expand(k, -1).clone() for r in rows)
        y = back(F.batch_norm(xv, *map(_flat, rows), _flat(weight), _flat(bias), True,
                              momentum, eps))
        if rows[0] is not running_mean:
            with torch.no_grad():
                running_mean.copy_(rows[0].mean(0, keepdim=True))
                running_var.copy_(rows[1].mean(0, keepdim=True))
        return y
    if weight is None:  # no affine step: a scale of one and shift of zero shared by the groups
        weight, bias = _ones(x, cdt)
    xv, axis, back = _core_view(x)
    if graph_mode() or not _records(x, weight, bias):  # tracers: plain operations
        y, mean, var, _ = core.batch_forward(xp, xv, weight, bias, eps=eps,
                                             inplace=not graph_mode(),
                                             **_layout(k, partition, axis))
    else:
        y, mean, var = _Batch.apply(xv, weight, bias, k, partition, eps, axis)
    if running_mean is not None:
        update_running(running_mean, running_var, mean, var,
                       _layer.group_counts(xp, x, 1, k, partition), momentum)
    return back(y)


@torch.no_grad()
def update_running(running_mean, running_var, mean, var, count, momentum: float) -> None:
    """The core's running-statistics update (:func:`localnorm._layer.running_update`) in
    place, in PyTorch's convention (``momentum`` the factor, the unbiased variance): of
    (K, C) rows, one per group along the batch axis, or of one (1, C) row shared by the
    groups, from the (K, C) group means and biased variances and the (K, 1) number of
    values per channel in each group."""
    new = _layer.running_update(xp, running_mean, running_var, mean, var, count, momentum,
                                unbiased=True)
    running_mean.copy_(new[0])
    running_var.copy_(new[1])


def _row(p: torch.Tensor | None, group) -> torch.Tensor | None:
    """Row ``group`` (an int or a 0-d tensor) of a (K, C) tensor, as a (C,) tensor; the
    row of a (1, C) tensor shared by the groups."""
    if p is None:
        return None
    if p.shape[0] == 1:
        return p[0]
    if isinstance(group, int):
        return p[group]
    return p.index_select(0, group.reshape(1)).reshape(-1)


def single(x: torch.Tensor, weight, bias, *, group, eps: float, cdt: torch.dtype) -> torch.Tensor:
    """``"single"`` mode without the fused kernels: each sample its own statistics (over
    its spatial axes), the weight/bias of ``group`` (an int, a 0-d tensor, or one group
    per sample as an (N,) int64 tensor)."""
    if not graph_mode() and not _channels_last(x) and x.ndim > 2 \
            and (weight is None or weight.dtype == torch.promote_types(x.dtype, torch.float32)):
        # instance normalization is one F.group_norm with a group per channel: "single" eval
        # at a quarter of BatchNorm2d's forward where the core takes 0.8x (discussion)
        n, c = x.shape[0], x.shape[1]
        if weight is None or not isinstance(group, torch.Tensor) or group.ndim == 0:
            return F.group_norm(x, c, _row(weight, group), _row(bias, group), eps)
        # one group along the batch axis per sample: its rows on the (1, N*C, *S) view
        rows = [p.index_select(0, group).reshape(-1) for p in (weight, bias)]
        y = F.group_norm(x.reshape((1, n * c) + tuple(x.shape[2:])), n * c, *rows, eps)
        return y.reshape(x.shape)
    if weight is None:
        weight, bias = _ones(x, cdt)
    if isinstance(group, torch.Tensor) and group.ndim == 0:
        group = group.reshape(1)
    # in place where nothing records a derivative
    xv, axis, back = _core_view(x)
    y = core.eval_forward(xp, xv, weight, bias, axis=axis, mode="single", group=group, eps=eps,
                          inplace=not graph_mode() and not _records(x, weight, bias))
    return back(y)


def evaluate(x: torch.Tensor, weight, bias, running_mean=None, running_var=None, *,
             mode: str, group, eps: float, cdt: torch.dtype) -> torch.Tensor:
    """The evaluation modes, with group ``group``'s weight/bias (an int, a 0-d tensor, or
    in ``"single"`` mode one group per sample as an (N,) int64 tensor): ``"single"``
    (:func:`single`); ``"set"``, one set of statistics over the whole batch, one
    F.batch_norm ("set" eval at 1.2x BatchNorm2d's forward where the core takes 3.0x,
    discussion); ``"running"``, group ``group``'s running statistics, one F.batch_norm."""
    fused = _kernels(x, weight, bias, cdt)
    if fused is not None:  # CUDA: the fused Triton kernels (issue 14)
        kernels, weight, bias = fused
        return kernels.eval_forward(x, weight, bias, mode=mode, group=group, eps=eps,
                                    running_mean=running_mean, running_var=running_var)
    if mode == "single":
        return single(x, weight, bias, group=group, eps=eps, cdt=cdt)
    stats = [None if s is None else _row(s, group).to(cdt) for s in (running_mean, running_var)]
    return F.batch_norm(x, *stats, _row(weight, group), _row(bias, group), mode == "set", 0.0,
                        eps)
