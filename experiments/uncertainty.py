"""Confidence scores as uncertainty signals: AUROC and selective accuracy (NumPy only).

The voting protocols give, for free, the *agreement* of the K groups (along the batch
axis) with the vote; every protocol gives the maximum softmax probability (MSP) of its
scores, the standard baseline (Hendrycks and Gimpel 2017). A signal is useful when the
predictions it is confident about are right more often than the others. Two measures,
on the test images of one cell (noise, level):

- **AUROC** of the confidence for telling right predictions from wrong ones: the
  probability that a random right prediction has a higher confidence than a random wrong
  one, ties counting one half (0.5: no signal; 1: perfect ranking). Undefined (None) when
  every prediction is right or every one is wrong.
- **Selective accuracy at coverage c**: the accuracy on the fraction c of images with the
  highest confidence (the others are rejected); the curve over c is the risk-coverage
  curve (risk = 1 - selective accuracy). Agreement takes only K + 1 values, so many images
  tie at the threshold: a tied block counts with its *expected* accuracy under a random
  choice among the tied images, so neither signal gains from an arbitrary tie order.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COVERAGES", "CURVE_COVERAGES", "auroc", "selective_accuracy", "summarize"]

#: Coverages of the tables (selective accuracy on the 50/80/90% most confident images).
COVERAGES = (0.5, 0.8, 0.9)

#: Coverages at which the risk-coverage curve is stored in results.json.
CURVE_COVERAGES = tuple(round(0.05 * i, 2) for i in range(1, 21))


def auroc(confidence: np.ndarray, correct: np.ndarray) -> float | None:
    """AUROC of ``confidence`` for separating ``correct`` (True) from wrong predictions,
    ties counting 1/2 (the Mann-Whitney statistic); None when one side is empty."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    n_pos, n_neg = int(ok.sum()), int((~ok).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    # Average ranks (1-based) with ties sharing the mean rank of their block.
    values, inverse, counts = np.unique(conf, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = mean_rank[inverse]
    u = ranks[ok].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def selective_accuracy(confidence: np.ndarray, correct: np.ndarray,
                       coverages=COVERAGES) -> list[float | None]:
    """Accuracy on the ``c * N`` most confident images for each coverage ``c`` in (0, 1],
    a block of tied confidences at the threshold counting with its mean accuracy
    (the expectation under a random order among ties); None where ``c * N < 1``."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    n = len(conf)
    values, inverse = np.unique(-conf, return_inverse=True)  # most confident first
    block_n = np.bincount(inverse, minlength=len(values)).astype(np.float64)
    block_ok = np.bincount(inverse, weights=ok, minlength=len(values))
    cum_n = np.concatenate([[0.0], np.cumsum(block_n)])
    cum_ok = np.concatenate([[0.0], np.cumsum(block_ok)])
    out: list[float | None] = []
    for c in coverages:
        m = float(c) * n
        if m < 1:
            out.append(None)
            continue
        b = int(np.searchsorted(cum_n, m, side="left")) - 1  # block holding the m-th image
        b = min(max(b, 0), len(values) - 1)
        taken = m - cum_n[b]
        expected = cum_ok[b] + taken * block_ok[b] / block_n[b]
        out.append(float(expected / m))
    return out


def summarize(confidence: np.ndarray, correct: np.ndarray, signal: str) -> dict:
    """The ``uncertainty`` entry of a results.json record: the signal's name, its AUROC,
    selective accuracy at :data:`COVERAGES` and the curve at :data:`CURVE_COVERAGES`."""
    a = auroc(confidence, correct)
    sel = selective_accuracy(confidence, correct, COVERAGES)
    curve = selective_accuracy(confidence, correct, CURVE_COVERAGES)
    return {
        "signal": signal,
        "auroc": None if a is None else round(a, 5),
        "selective_accuracy": {f"{c:g}": None if v is None else round(v, 5)
                               for c, v in zip(COVERAGES, sel)},
        "curve": [[c, None if v is None else round(v, 5)] for c, v in zip(CURVE_COVERAGES, curve)],
    }
