"""Native PyTorch fast paths of LocalNorm (no validation; the layers validate).

The math is :func:`localnorm.local_norm` (see ``docs/spec.md``); this module only chooses
how to run it fast with PyTorch kernels, and the conformance harness
(``conformance/harnesses/torch_layers.py``) proves every path equal to
:func:`localnorm.reference.local_norm`:

- ``"batch"`` mode, batch a multiple of K: the K groups along the batch axis become K*C
  channels of one fused ``F.batch_norm`` call. With strided groups the batch viewed as
  (N/K, K*C, ...) is a free view; contiguous groups and channels_last inputs need one
  layout copy in and one out (channels_last output stays channels_last).
- ``"batch"`` mode, ragged batch (N % K != 0): the array-API core
  :func:`localnorm.local_norm`.
- ``"single"``: plain reductions over the spatial axes (exportable to ONNX without a
  training-mode BatchNormalization node).
- ``"set"``: one fused ``F.batch_norm`` with group ``g``'s scale and shift.
- ``"running"``: ``F.batch_norm`` with group ``g``'s running statistics.

No Python loop over samples or groups anywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import localnorm
from localnorm import _agnostic

__all__ = [
    "batch_groups",
    "single",
    "set_stats",
    "running",
    "update_running_ragged",
]


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


def batch_groups(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    num_groups: int,
    partition: str,
    eps: float,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    momentum: float = 0.0,
) -> torch.Tensor:
    """``"batch"`` mode: K groups along the batch axis, each its own statistics and
    weight/bias row. Updates the (K, C) running statistics in place when given (batch a
    multiple of K; ragged batches update them with :func:`update_running_ragged`)."""
    n, c = x.shape[0], x.shape[1]
    k = num_groups
    if n % k == 0:
        xf, cl = _to_fused(x, k, partition)
        yf = F.batch_norm(
            xf, _flat(running_mean), _flat(running_var), _flat(weight), _flat(bias),
            True, momentum, eps,
        )
        return _from_fused(yf, n, k, c, partition, cl)
    if weight is None:
        weight = torch.ones((k, c), dtype=x.dtype, device=x.device)
        bias = torch.zeros((k, c), dtype=x.dtype, device=x.device)
    return localnorm.local_norm(
        x, weight, bias, axis=1, mode="batch", partition=partition, eps=eps,
        check_finite=False,
    )


@torch.no_grad()
def update_running_ragged(
    x: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    *,
    num_groups: int,
    partition: str,
    momentum: float,
) -> None:
    """BatchNorm's running-statistics update, per group, for a ragged batch."""
    from array_api_compat import torch as xp

    mean, var = _agnostic.group_moments(xp, x.detach(), 1, num_groups, partition)
    sizes = torch.as_tensor(
        localnorm.group_sizes(x.shape[0], num_groups), dtype=var.dtype, device=var.device
    )
    count = sizes[:, None] * (x[0, 0].numel())
    unbiased = var * count / (count - 1).clamp_min(1)
    running_mean.lerp_(mean.to(running_mean.dtype), momentum)
    running_var.lerp_(unbiased.to(running_var.dtype), momentum)


def _rows(p: torch.Tensor | None, group, ndim: int) -> torch.Tensor | None:
    """The weight/bias rows of ``group`` (int or per-sample (N,) tensor), broadcastable
    against an (N, C, *S) input."""
    if p is None:
        return None
    if isinstance(group, int):
        return p[group].reshape((1, -1) + (1,) * (ndim - 2))
    return p.index_select(0, group).reshape(tuple(group.shape) + (-1,) + (1,) * (ndim - 2))


def single(x: torch.Tensor, weight, bias, *, group, eps: float) -> torch.Tensor:
    """``"single"`` mode: each sample its own statistics (over its spatial axes), the
    weight/bias of ``group`` (an int, or one group per sample as an (N,) int64 tensor)."""
    dims = tuple(range(2, x.ndim))
    mean = x.mean(dims, keepdim=True)
    centered = x - mean
    var = centered.square().mean(dims, keepdim=True)
    y = centered * torch.rsqrt(var + eps)
    w = _rows(weight, group, x.ndim)
    b = _rows(bias, group, x.ndim)
    if w is not None:
        y = y * w + b
    return y


def set_stats(x: torch.Tensor, weight, bias, *, group: int, eps: float) -> torch.Tensor:
    """``"set"`` mode: one set of statistics over the whole batch, group ``group``'s
    weight/bias (one fused batch_norm)."""
    w = None if weight is None else weight[group]
    b = None if bias is None else bias[group]
    return F.batch_norm(x, None, None, w, b, True, 0.0, eps)


def running(x: torch.Tensor, weight, bias, running_mean, running_var, *, group: int, eps: float):
    """``"running"`` mode: group ``group``'s running statistics and weight/bias."""
    w = None if weight is None else weight[group]
    b = None if bias is None else bias[group]
    rm = running_mean[group].to(x.dtype)
    rv = running_var[group].to(x.dtype)
    return F.batch_norm(x, rm, rv, w, b, False, 0.0, eps)
