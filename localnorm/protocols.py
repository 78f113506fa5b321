"""The four test-time protocols of the paper, once, for every backend.

An adapter's ``predict(model, x, protocol=...)`` builds a ``forward(x, mode, group)``
callable (its model in evaluation mode with the given layer mode and group) and hands it
to :func:`run_protocol`, which does the chunking, tiling and voting with array-API
calls. The protocols, in terms of the layer modes of :func:`localnorm.local_norm`:

``"batch"`` (BATCH)
    chunks of ``batch_size`` test images, each evaluated in ``"batch"`` mode: K groups
    along the batch axis, each with its own statistics and gamma_k/beta_k.
``"single"`` (SINGLE)
    every image normalized with its own statistics (``"single"`` mode) and the gamma/beta
    of one group: a given int, or one drawn per image. One pass over the batch gives the
    same result as N one-image passes.
``"single-voting"`` (SINGLE-VOTING)
    every image through all K groups in ``"single"`` mode, then a vote: passes over
    chunks of ceil(N/K) images tiled K times with per-sample groups
    ``[0]*m + [1]*m + ...``, so that no pass holds more rows than x (the K*N rows of one
    pass cost more than K passes of N rows on a CPU, where they fall out of the caches).
``"voting"`` (VOTING)
    sets of ``set_size`` images (the training group size, N/K); each set goes through
    every group with the set's statistics (``"set"`` mode), then a vote. Computed as one
    ``"batch"``-mode pass over the set tiled K times (laid out for the layers'
    partition), which equals K ``"set"``-mode passes.

A lone image is never replicated to fill a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import array_api_compat
import numpy as np

from . import _errors, _spec
from ._voting import vote as _vote

__all__ = ["Prediction", "run_protocol", "chunks", "draw_groups"]


class Prediction(NamedTuple):
    """What ``predict`` returns.

    Attributes
    ----------
    scores : array, shape (N, classes)
        BATCH and SINGLE: the model's outputs. Voting protocols: the vote's scores (vote
        fractions for hard voting, mean probabilities for soft voting).
    labels : array, shape (N,)
        Predicted class per sample.
    agreement : array of shape (N,) or None
        Voting protocols: the fraction of the K groups (along the batch axis) that agree
        with the vote. None for BATCH and SINGLE.
    """

    scores: Any
    labels: Any
    agreement: Any = None


def chunks(n: int, size: int, min_size: int = 1) -> list[tuple[int, int]]:
    """Split ``range(n)`` into consecutive ``(start, stop)`` chunks of ``size``.

    A last chunk smaller than ``min_size`` is merged into the one before it, so no chunk
    is too small for its statistics while a ragged last chunk is still evaluated (never
    dropped).

    Parameters
    ----------
    n : int
        Number of samples.
    size : int
        Samples per chunk, >= 1.
    min_size : int, default 1
        Smallest acceptable last chunk, >= 1.

    Returns
    -------
    list of (int, int)
        The chunks' bounds, covering ``range(n)`` in order.

    Raises
    ------
    LocalNormError
        If n is not an int >= 0, or size or min_size is not an int >= 1.

    Examples
    --------
    >>> from localnorm.protocols import chunks
    >>> chunks(10, 4), chunks(10, 4, min_size=3)
    ([(0, 4), (4, 8), (8, 10)], [(0, 4), (4, 10)])
    """
    n = _spec.check_batch_count(n, "n")
    for name, value in (("size", size), ("min_size", min_size)):
        if not _is_int(value) or value < 1:
            raise _errors.bad_protocol_size(name, value)
    bounds = [(s, min(s + size, n)) for s in range(0, n, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_size:
        (s, _), (_, e) = bounds[-2], bounds[-1]
        bounds[-2:] = [(s, e)]
    return bounds


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def draw_groups(n: int, num_groups: int, seed: Any = None) -> np.ndarray:
    """One group along the batch axis per sample, uniformly at random.

    Parameters
    ----------
    n : int
        Number of samples.
    num_groups : int
        K, the number of groups along the batch axis.
    seed : None, int, numpy.random.SeedSequence or numpy.random.Generator
        The source of the draw: a Generator is used (and advanced) as it is; anything
        else seeds a new one (None: fresh entropy). Adapters whose framework has its own
        generators (torch, JAX keys) draw with those instead.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(n,)`` with values in ``[0, num_groups)``.

    Raises
    ------
    LocalNormError
        If ``seed`` is none of the above (for example a string or a bool), n is not an
        int >= 0 or num_groups not an int >= 1.
    """
    n, num_groups = _spec.check_batch_count(n, "n"), _spec.check_num_groups(num_groups)
    rng = _spec.as_generator(seed)
    if rng is None:
        raise _errors.bad_generator(seed)
    return rng.integers(0, num_groups, size=n, dtype=np.int64)


def _check_size(name: str, value: Any) -> int | None:
    """None, or a positive int number of images (``batch_size``, ``set_size``)."""
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise _errors.bad_protocol_size(name, value)
    return int(value)


def _classifier(forward: Callable[[Any, str, Any], Any]) -> Callable[[Any, str, Any], Any]:
    """``forward``, its output checked to be class scores: one row per input row."""
    def checked(xs, mode, group):
        out = forward(xs, mode, group)
        shape = tuple(getattr(out, "shape", ()))  # a list or dict of outputs: no scores
        if len(shape) != 2 or shape[0] != xs.shape[0]:
            raise _errors.not_class_scores(shape, xs.shape[0])
        return out
    return checked


def run_protocol(
    forward: Callable[[Any, str, Any], Any],
    x,
    *,
    protocol: str,
    num_groups: int,
    batch_size: int | None = None,
    set_size: int | None = None,
    vote: str = "hard",
    group: Any = None,
    partition: str = "contiguous",
    from_logits: bool = True,
) -> Prediction:
    """Evaluate ``x`` under a test-time protocol.

    Parameters
    ----------
    forward : callable
        ``forward(x, mode, group) -> scores`` of shape (len(x), classes): the model in
        evaluation mode with every LocalNorm layer in ``mode`` and ``group``.
    x : array
        Test inputs, batch on axis 0 (any array-API array).
    protocol : str, one of "batch", "single", "single-voting", "voting"
    num_groups : int
        K, the number of groups along the batch axis of the model's LocalNorm layers.
    batch_size : int, optional
        BATCH: the evaluation batch, at least K (default: the whole of x). Other
        protocols: how many rows one pass holds (memory and speed only, the result does
        not change; default:
        ``len(x)``, so SINGLE is one pass). SINGLE-VOTING tiles each image K times, so a
        pass holds ``ceil(batch_size / K)`` images: ``batch_size`` rounded up to a
        multiple of K, and never fewer than K rows (one image through all K groups).
    set_size : int, optional
        VOTING: images per set, normally the training group size (batch size / K).
        Default: ``max(len(x) // num_groups, 1)``.
    vote : {"hard", "soft"}
        How the voting protocols combine the groups (see :func:`localnorm.vote`).
    group : int, integer array of shape (N,), or None
        SINGLE: the group whose gamma/beta each image uses; None is not accepted here
        (adapters draw random groups with their own generators, see
        :func:`draw_groups`). Ignored by the other protocols.
    partition : {"contiguous", "strided"}
        The layers' partition, which decides how VOTING tiles a set.
    from_logits : bool
        Whether the model returns logits (a softmax is applied before soft voting).

    Returns
    -------
    Prediction
        ``(scores, labels, agreement)`` in x's array type; ``agreement`` is None for
        BATCH and SINGLE.

    Raises
    ------
    LocalNormError
        For an unknown protocol, vote or partition, a bad ``num_groups``, an empty x,
        ``batch_size``/``set_size`` not a positive int, BATCH with fewer than K images
        or a ``batch_size`` below K, or SINGLE without a group.
    """
    _spec.check_choice("protocol", protocol, _spec.PROTOCOLS)
    _spec.check_choice("vote", vote, _spec.VOTE_METHODS)
    _spec.check_choice("partition", partition, _spec.PARTITIONS)
    _spec.check_flag("from_logits", from_logits)
    k = _spec.check_num_groups(num_groups)
    xp = array_api_compat.array_namespace(x)
    n = x.shape[0]
    if n == 0:
        raise _errors.empty_batch()
    batch_size = _check_size("batch_size", batch_size)
    set_size = _check_size("set_size", set_size)
    step = n if batch_size is None else batch_size
    forward = _classifier(forward)

    if protocol == "batch":
        if n < k:
            raise _errors.bad_protocol_inputs(protocol, n, k, f"at least {k} images (one per group)")
        if step < k:
            raise _errors.batch_size_below_groups(step, k)
        outs = [forward(x[s:e, ...], "batch", 0) for s, e in chunks(n, step, min_size=k)]
        scores = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
        return Prediction(scores, xp.argmax(scores, axis=-1), None)

    if protocol == "single":
        if group is None:
            raise _errors.bad_group(group, k)
        if isinstance(group, (int, np.integer)):
            outs = [forward(x[s:e, ...], "single", int(group)) for s, e in chunks(n, step)]
        else:
            outs = [forward(x[s:e, ...], "single", group[s:e]) for s, e in chunks(n, step)]
        scores = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
        return Prediction(scores, xp.argmax(scores, axis=-1), None)

    if protocol == "single-voting":
        per_group = []
        images = -(-step // k)  # ceil(batch_size / K), batch_size default len(x)
        for s, e in chunks(n, images):
            m = e - s
            tiled = xp.concat([x[s:e, ...]] * k, axis=0)
            groups = np.repeat(np.arange(k, dtype=np.int64), m)
            out = forward(tiled, "single", groups)
            per_group.append(xp.reshape(out, (k, m, out.shape[-1])))
        stacked = per_group[0] if len(per_group) == 1 else xp.concat(per_group, axis=1)
        return Prediction(*_vote(stacked, vote, from_logits=from_logits))

    # VOTING
    size = max(n // k, 1) if set_size is None else set_size
    per_group = []
    for s, e in chunks(n, size, min_size=min(2, size)):
        m = e - s
        xs = x[s:e, ...]
        if partition == "contiguous":
            out = forward(xp.concat([xs] * k, axis=0), "batch", 0)
            out = xp.reshape(out, (k, m, out.shape[-1]))
        else:
            out = forward(xp.repeat(xs, k, axis=0), "batch", 0)
            out = xp.permute_dims(xp.reshape(out, (m, k, out.shape[-1])), (1, 0, 2))
        per_group.append(out)
    stacked = per_group[0] if len(per_group) == 1 else xp.concat(per_group, axis=1)
    return Prediction(*_vote(stacked, vote, from_logits=from_logits))
