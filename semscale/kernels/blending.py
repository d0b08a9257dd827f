"""Windows and tiles of one region into class probabilities: numpy (or cupy) arrays in and out, no I/O.

Within a region, windows are accumulated in raster order of their global position, so any chunking gives the
same sums. Ensembles average the members' probabilities; *uncertainty* is the standard deviation across
members (ddof=0) of the probability of the predicted class (argmax of the mean), 0 for one model;
*confidence* is the maximum mean probability. Test-time augmentation (``tta``) averages the 8 flips /
rotations of every window or tile. The layout of windows and tiles is :mod:`semscale.kernels.windows`'.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from semscale.kernels.windows import (
    Geometry,
    gaussian_weights,
    input_extent,
    tile_spans,
    window_starts,
)

__all__ = [
    "Core",
    "PredictFn",
    "argmax_last",
    "blend_windows",
    "combine_members",
    "member_fn",
    "predict_region",
    "tile_member",
    "tta_apply",
]

PredictFn = Callable[[np.ndarray], np.ndarray]
"""A network as a function: float32 ``(n, h, w, 1)`` → probabilities float32 ``(n, h, w, K)`` (numpy)."""
Core = tuple[tuple[int, int], tuple[int, int]]
"""An output range ``((y0, y1), (x0, x1))`` in global px."""
MemberFn = Callable[[np.ndarray], Any]
"""A member as the blending sees it: numpy batch in, ``xp`` float32 probabilities out (TTA applied)."""


def tta_apply(fn: PredictFn, x: Any, xp: Any = np) -> Any:
    """Mean of ``fn`` over the 8 flips/rotations of batch ``x`` ``(n, h, w, c)``, each mapped back."""
    total = None
    for k in range(4):
        for flip in (False, True):
            t = xp.rot90(x, k, axes=(1, 2))
            if flip:
                t = t[:, :, ::-1]
            y = fn(xp.ascontiguousarray(t))
            if flip:
                y = y[:, :, ::-1]
            y = xp.rot90(y, -k, axes=(1, 2))
            total = y.astype(np.float32) if total is None else total + y
    assert total is not None
    return total / np.float32(8.0)


def argmax_last(a: Any, xp: Any = np) -> tuple[Any, Any]:
    """``(argmax, max)`` over the last (short, class) axis: uint8 labels and the maximum, the first index
    winning ties as in ``argmax``. A few elementwise passes instead of a strided reduction (about 4× faster
    for K = 4 on ``(h, w, K)`` arrays)."""
    best = a[..., 0].copy()
    label = xp.zeros(best.shape, np.uint8)
    greater = xp.empty(best.shape, bool)
    for k in range(1, a.shape[-1]):
        c = a[..., k]
        xp.greater(c, best, out=greater)
        xp.copyto(label, np.uint8(k), where=greater)
        xp.maximum(best, c, out=best)
    return label, best


def combine_members(members: Sequence[Any], xp: Any = np, *, with_labels: bool = False) -> Any:
    """Stack of ``(h, w, K + 2)`` float32: mean probabilities (K), confidence = max mean probability,
    uncertainty = std over members (ddof 0) of the predicted class's probability (0 for one member).
    ``with_labels``: return ``(stack, labels)``, the uint8 argmax found on the way."""
    first = members[0]
    k = first.shape[-1]
    out = xp.empty((*first.shape[:-1], k + 2), np.float32)
    if len(members) == 1:
        out[..., :k] = first
        out[..., k + 1] = 0.0
    else:
        stack = xp.stack(members).astype(np.float32)
        out[..., :k] = stack.mean(axis=0)
    label, out[..., k] = argmax_last(out[..., :k], xp)
    if len(members) > 1:
        p_win = xp.take_along_axis(stack, xp.broadcast_to(label[None, ..., None], (*stack.shape[:-1], 1)), -1)
        out[..., k + 1] = p_win[..., 0].std(axis=0)
    return (out, label) if with_labels else out


def _call(fn: PredictFn, x: np.ndarray, xp: Any) -> Any:
    y = fn(np.ascontiguousarray(x, dtype=np.float32))
    return xp.asarray(y, dtype=np.float32)


def member_fn(fn: PredictFn, geom: Geometry, xp: Any) -> MemberFn:
    """``fn`` as the blending calls it: ``xp`` float32 output, averaged over the 8 TTA views if asked."""
    if not geom.tta:
        return lambda x: _call(fn, x, xp)
    return lambda x: xp.asarray(tta_apply(lambda t: fn(np.ascontiguousarray(t)), x, np), dtype=np.float32)


def blend_windows(
    padded: np.ndarray, origin: tuple[int, int], core: Core, fn: MemberFn, geom: Geometry, xp: Any,
) -> Any:
    """One member's probabilities ``(h, w, K)`` on ``core``: the (Gaussian-)weighted mean of its windows."""
    (a0, b0), (a1, b1) = core
    p, s = geom.window
    ys = window_starts(a0, b0, patch_size=p, stride=s)
    xs = window_starts(a1, b1, patch_size=p, stride=s)
    positions = [(int(y), int(x)) for y in ys for x in xs]  # raster order on the global grid
    weights = None if geom.mode == "average" else xp.asarray(gaussian_weights(p, sigma_fraction=geom.sigma_fraction))
    acc = None
    wsum = xp.zeros((b0 - a0, b1 - a1), np.float32)
    for i in range(0, len(positions), geom.batch_size):
        batch = positions[i : i + geom.batch_size]
        windows = np.zeros((geom.batch_size, p, p), np.float32)  # full batches: one shape, one trace
        for n, (y, x) in enumerate(batch):
            windows[n] = padded[y - origin[0] : y - origin[0] + p, x - origin[1] : x - origin[1] + p]
        out = fn(windows[..., None])[: len(batch)]
        if acc is None:
            acc = xp.zeros((b0 - a0, b1 - a1, out.shape[-1]), np.float32)
        for (y, x), prob in zip(batch, out):
            y0, y1, x0, x1 = max(y, a0), min(y + p, b0), max(x, a1), min(x + p, b1)
            win = prob[y0 - y : y1 - y, x0 - x : x1 - x]
            if weights is None:
                acc[y0 - a0 : y1 - a0, x0 - a1 : x1 - a1] += win
                wsum[y0 - a0 : y1 - a0, x0 - a1 : x1 - a1] += np.float32(1.0)
            else:
                w = weights[y0 - y : y1 - y, x0 - x : x1 - x]
                acc[y0 - a0 : y1 - a0, x0 - a1 : x1 - a1] += win * w[..., None]
                wsum[y0 - a0 : y1 - a0, x0 - a1 : x1 - a1] += w
    assert acc is not None
    return acc / wsum[..., None]


def tile_member(
    padded: np.ndarray, origin: tuple[int, int], core: Core, fn: MemberFn, geom: Geometry, xp: Any,
) -> Any:
    """One member's probabilities ``(h, w, K)`` on ``core``: the centres of its halo-padded tiles."""
    (a0, b0), (a1, b1) = core
    kw = {"tile_size": geom.tile_size, "halo": geom.halo, "multiple": geom.multiple}
    out = None
    for c0, c1, i0, i1 in tile_spans(a0, b0, **kw):
        for d0, d1, j0, j1 in tile_spans(a1, b1, **kw):
            x = padded[i0 - origin[0] : i1 - origin[0], j0 - origin[1] : j1 - origin[1]]
            prob = fn(x[None, ..., None])[0]
            if out is None:
                out = xp.empty((b0 - a0, b1 - a1, prob.shape[-1]), np.float32)
            out[c0 - a0 : c1 - a0, d0 - a1 : d1 - a1] = prob[c0 - i0 : c1 - i0, d0 - j0 : d1 - j0]
    assert out is not None
    return out


def predict_region(
    padded: np.ndarray,
    *,
    origin: tuple[int, int],
    core: Core,
    predict_fns: Sequence[PredictFn],
    geom: Geometry,
    xp: Any = np,
    with_labels: bool = False,
    with_members: bool = False,
    passes: Sequence[int] | None = None,
) -> Any:
    """Outputs ``(h, w, K + 2)`` float32 (see :func:`combine_members`) for the global output range ``core``
    from normalised input ``padded`` whose pixel ``[0, 0]`` sits at global ``origin`` (px) and which covers
    :func:`~semscale.kernels.windows.input_extent` of ``core`` (with the uint8 labels too when
    ``with_labels``; and with ``with_members`` also each member's own labels, ``(M, h, w)`` uint8, as the
    third item). ``passes``: how many consecutive ``predict_fns`` are the stochastic passes of one member
    (Monte-Carlo dropout; default one each); every pass counts as a sample in the mean and the
    uncertainty, and a member's own labels are the argmax of its passes' mean. Pure: no I/O."""
    for axis in range(2):
        lo, hi = input_extent(*core[axis], geom)
        if lo < origin[axis] or hi > origin[axis] + padded.shape[axis]:
            raise ValueError(
                f"Expected input covering [{lo}, {hi}) px on axis {axis} for `padded`. "
                f"Got [{origin[axis]}, {origin[axis] + padded.shape[axis]})."
            )
    member = tile_member if geom.mode == "tile" else blend_windows
    probs = [member(padded, origin, core, member_fn(fn, geom, xp), geom, xp) for fn in predict_fns]
    combined = combine_members(probs, xp, with_labels=with_labels or with_members)
    if not with_members:
        return combined
    out, labels = combined
    counts = list(passes) if passes is not None else [1] * len(probs)
    if sum(counts) != len(probs):
        raise ValueError(f"Expected `passes` summing to {len(probs)} (the functions). Got {counts}.")
    starts = [sum(counts[:i]) for i in range(len(counts))]
    own = [probs[a] if n == 1 else sum(probs[a : a + n]) for a, n in zip(starts, counts)]
    return out, labels, xp.stack([argmax_last(p, xp)[0] for p in own])
