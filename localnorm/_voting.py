"""Voting over the K groups along the batch axis, with an agreement measure."""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

from . import _errors, _spec
from ._core import _is_concrete

__all__ = ["Vote", "vote", "softmax"]


class Vote(NamedTuple):
    """Result of :func:`vote` (and of the voting protocols of the adapters' ``predict``).

    Attributes
    ----------
    scores : array, shape (N, classes)
        Hard voting: the fraction of the K groups that voted for each class. Soft voting:
        the mean over groups of the class probabilities.
    labels : array, shape (N,)
        The voted class of each sample (integer dtype).
    agreement : array, shape (N,)
        The fraction of groups whose own top class (the smaller class index if its top
        scores tie) equals the voted label: in [1/K, 1] for hard voting, [0, 1] for soft
        voting. 1.0 means all groups agree; low agreement flags inputs the network is
        unsure of (for example under heavy noise), at no extra cost.
    """

    scores: Any
    labels: Any
    agreement: Any


def softmax(xp, s, axis: int = -1):
    """Numerically stable softmax in the array-API namespace ``xp``, defined for infinite
    logits as the limit: a ``-inf`` logit has probability 0, and where the largest logit
    of a row is infinite the row's mass is shared equally by the entries equal to it (the
    ``+inf`` ones; every entry when all are ``-inf``). Finite input never gives NaN."""
    m = xp.max(s, axis=axis, keepdims=True)
    inf_row = xp.isinf(m)
    zero = xp.zeros_like(m)
    z = xp.where(inf_row, xp.where(s == m, zero, xp.full_like(s, -float("inf"))),
                 s - xp.where(inf_row, zero, m))
    e = xp.exp(z)
    return e / xp.sum(e, axis=axis, keepdims=True)


def _as_array(scores):
    """An array-API array as it is; anything else (a nested Python list, a tuple) as a
    NumPy array, so ``vote([[[0.9, 0.1]]])`` works like ``vote(np.array(...))``."""
    if array_api_compat.is_array_api_obj(scores):
        return scores
    import numpy as np

    try:
        out = np.asarray(scores)
    except (TypeError, ValueError) as exc:  # ragged lists, objects
        raise _errors.bad_scores_type(scores, str(exc)) from None
    if out.dtype == object or out.dtype.kind not in "biuf":
        raise _errors.bad_scores_type(scores, f"dtype {out.dtype}")
    return out



def vote(scores, method: str = "hard", *, from_logits: bool = False) -> Vote:
    """Combine per-group predictions of shape (K, N, classes) into one per sample.

    Parameters
    ----------
    scores : array or nested list, shape (K, N, classes)
        For each of the K groups along the batch axis, the class scores of N samples:
        probabilities, or logits with ``from_logits=True``. Any array-API array (the
        results keep its type); a nested Python list is read as a NumPy array. NaN is
        refused; so is an infinite score unless ``from_logits=True``, where ``-inf`` is
        probability 0 and ``+inf`` takes the whole mass (shared by the row's ``+inf``
        entries). Soft voting without ``from_logits`` averages probabilities and refuses
        scores outside [0, 1] (they are logits: pass ``from_logits=True``); hard voting
        takes any finite scores (only each group's ranking and, for ties, their mean
        matter).
    method : {"hard", "soft"}, default "hard"
        ``"hard"``: each group votes for its top class and the class with the most votes
        wins. Ties between classes with the most votes are broken by the larger mean
        probability over the groups, then by the smaller class index. ``"soft"``: the
        mean over groups of the class probabilities; its top class wins (the smaller
        index on exact ties).

        A group whose own top scores tie votes for the **smaller class index** among them
        (``argmax`` takes the first maximum); this decides its hard vote and whether it
        counts towards ``agreement``, under both methods.
    from_logits : bool, default False
        Apply a softmax over the class axis first (this matters for soft voting and for
        hard voting's tie-break; each group's top class is unchanged).

    Returns
    -------
    Vote
        ``(scores, labels, agreement)``, see :class:`Vote`.

    Raises
    ------
    LocalNormError
        For an unknown method, scores not of shape (K, N, classes) or not numbers, NaN
        scores, infinite probabilities, or soft voting on scores outside [0, 1] without
        ``from_logits=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from localnorm import vote
    >>> p = np.array([[[0.9, 0.1]], [[0.4, 0.6]], [[0.8, 0.2]]])  # K=3, N=1, 2 classes
    >>> v = vote(p, "hard")
    >>> v.labels.tolist(), v.scores.round(3).tolist(), v.agreement.round(3).tolist()
    ([0], [[0.667, 0.333]], [0.667])
    """
    _spec.check_choice("method", method, _spec.VOTE_METHODS)
    from_logits = _spec.check_flag("from_logits", from_logits)
    scores = _as_array(scores)
    xp = array_api_compat.array_namespace(scores)
    if scores.ndim != 3 or scores.shape[0] < 1 or scores.shape[2] < 1:
        raise _errors.bad_scores(tuple(scores.shape))
    if not _spec.is_real_floating(xp, scores.dtype):
        scores = xp.astype(scores, xp.float64)
    if _is_concrete(scores) and scores.shape[1] > 0:
        nan = xp.isnan(scores) if from_logits else xp.logical_not(xp.isfinite(scores))
        if bool(xp.any(nan)):
            raise _errors.scores_not_finite(int(xp.count_nonzero(nan)), from_logits)
        if method == "soft" and not from_logits and bool(
                xp.any(xp.logical_or(scores < 0, scores > 1))):
            raise _errors.soft_vote_not_probabilities(float(xp.min(scores)),
                                                      float(xp.max(scores)))
    k, _, classes = scores.shape
    probs = softmax(xp, scores, axis=-1) if from_logits else scores
    mean_probs = xp.mean(probs, axis=0)
    top = xp.argmax(probs, axis=-1)  # (K, N)
    if method == "soft":
        labels = xp.argmax(mean_probs, axis=-1)
        out = mean_probs
    else:
        dev = array_api_compat.device(scores)
        classes_ix = xp.arange(classes, device=dev)
        onehot = xp.astype(top[..., None] == classes_ix, scores.dtype)  # (K, N, classes)
        out = xp.mean(onehot, axis=0)
        best = xp.max(out, axis=-1, keepdims=True)
        neg_inf = xp.asarray(-float("inf"), dtype=scores.dtype, device=dev)
        labels = xp.argmax(xp.where(out == best, mean_probs, neg_inf), axis=-1)
    agreement = xp.mean(xp.astype(top == labels[None, :], scores.dtype), axis=0)
    return Vote(out, labels, agreement)
