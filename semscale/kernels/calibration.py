"""Class offsets that make a classifier's labels count each class as the truth does.

A pixel's label is the class of the largest probability; adding an offset ``b_k`` to the log-probability of
class ``k`` (a prior shift, ``p_k · e^{b_k}`` renormalised) moves the label boundaries between classes
without retraining. :func:`share_offsets` finds the offsets at which the labels' class shares over a set of
images with exact truth equal the truth's shares, the quantity the campaign statistics are made of.
numpy in → numpy out; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semscale import IGNORE_LABEL

__all__ = ["MAX_ITERATIONS", "SHARE_TOLERANCE", "class_shares", "offset_labels", "share_offsets"]

SHARE_TOLERANCE = 1e-4
"""Stop once every class share of the labels is within this of the truth's (a fraction, 0.01 points)."""
MAX_ITERATIONS = 200
_FLOOR = 1e-7
"""Probabilities are floored here before the logarithm (a softmax output can be exactly 0 in float32)."""


def offset_labels(probabilities: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Labels (uint8, ``(…)``) of ``probabilities`` ``(…, K)`` after adding ``offsets`` ``(K,)`` to their logs."""
    logp = np.log(np.maximum(np.asarray(probabilities, np.float32), _FLOOR))
    return np.argmax(logp + np.asarray(offsets, np.float32), axis=-1).astype(np.uint8)


def class_shares(labels: Sequence[np.ndarray], *, n_classes: int) -> np.ndarray:
    """Share of each class among the labelled pixels (``IGNORE_LABEL`` left out) of all ``labels`` pooled."""
    counts = np.zeros(n_classes, np.int64)
    for lab in labels:
        lab = np.asarray(lab).ravel()
        counts += np.bincount(lab[lab != IGNORE_LABEL], minlength=n_classes)[:n_classes]
    return counts / max(1, int(counts.sum()))


def share_offsets(probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray], *, n_classes: int,
                  damping: float = 0.5) -> np.ndarray:
    """Log-probability offsets ``(K,)`` (mean 0 over the classes present in the truth; 0 for the others)
    at which the labels of ``probabilities`` (each ``(H, W, K)``) have the class shares of ``truths`` (each
    ``(H, W)`` uint8, ``IGNORE_LABEL`` left out), pooled over the images.

    Fixed-point iteration ``b_k += damping · ln(truth share / label share)`` (the log ratio clipped to ±1, for
    classes the labels miss altogether); labels are a step function of
    the offsets, so it stops at :data:`SHARE_TOLERANCE` or after :data:`MAX_ITERATIONS`, returning the
    offsets with the smallest largest share error seen (zeros if none beat them).
    """
    if len(probabilities) != len(truths) or not probabilities:
        raise ValueError(f"Expected as many probability maps as truths (at least one). Got {len(probabilities)} "
                         f"and {len(truths)}.")
    logp = [np.log(np.maximum(np.asarray(p, np.float32), _FLOOR)) for p in probabilities]
    valid = [np.asarray(t) != IGNORE_LABEL for t in truths]
    target = class_shares(truths, n_classes=n_classes)
    present = target > 0
    offsets = np.zeros(n_classes, np.float64)
    best, best_err = offsets.copy(), np.inf
    for _ in range(MAX_ITERATIONS):
        labels = [np.where(v, np.argmax(lp + offsets.astype(np.float32), axis=-1), IGNORE_LABEL)
                  for lp, v in zip(logp, valid)]
        shares = class_shares(labels, n_classes=n_classes)
        err = float(np.abs(shares - target).max())
        if err < best_err:
            best, best_err = offsets.copy(), err
        if err <= SHARE_TOLERANCE:
            break
        step = np.clip(np.log(np.maximum(target, _FLOOR) / np.maximum(shares, _FLOOR)), -1.0, 1.0)
        offsets = offsets + damping * np.where(present, step, 0.0)
        offsets[present] -= offsets[present].mean()
    return best
