"""Test oracles for inference: a slow, obviously correct NumPy reference of the blending modes, and fake
networks whose outputs make every blending error show."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semscale.config import InferenceConfig
from semscale.inference import ModelFacts, make_geometry
from semscale.kernels.windows import Geometry, align_up, gaussian_weights, window_starts

PredictFn = Callable[[np.ndarray], np.ndarray]


def geometry(cfg: InferenceConfig, *, multiple: int = 1, halo_px: int = 0) -> Geometry:
    """The geometry inference builds for ``cfg`` and a network with these facts (4 classes)."""
    facts = ModelFacts(n_classes=4, classes=None, multiple=multiple, halo_px=halo_px, patch_size=None)
    return make_geometry(cfg, facts)


def _run(predict_fn: PredictFn, x: np.ndarray, tta: bool) -> np.ndarray:
    if not tta:
        return np.asarray(predict_fn(x[None, ..., None].astype(np.float32)))[0]
    total: Any = 0.0
    for k in range(4):
        for flip in (False, True):
            t = np.rot90(x, k)
            t = t[:, ::-1] if flip else t
            y = np.asarray(predict_fn(np.ascontiguousarray(t)[None, ..., None].astype(np.float32)))[0]
            y = y[:, ::-1] if flip else y
            total = total + np.rot90(y, -k)
    return np.asarray(total, dtype=np.float32) / np.float32(8.0)


def reference_predict(image: np.ndarray, *, predict_fn: PredictFn, geom: Geometry) -> np.ndarray:
    """Probabilities ``(H, W, K)`` of one model on a whole normalised image, the slow obvious way.

    Window modes: mirror-pad the image, loop over every window of the global grid one at a time, add its
    (weighted) softmax into a padded accumulator, divide, crop. Tile mode: one pass over the whole image
    mirror-padded by the halo (and up to a multiple of the network's multiple), cropped.
    """
    h, w = image.shape
    if geom.mode == "tile":
        halo = geom.halo
        pad = ((halo, align_up(h, geom.multiple) - h + halo), (halo, align_up(w, geom.multiple) - w + halo))
        out = _run(predict_fn, np.pad(image, pad, mode="symmetric"), geom.tta)
        return out[halo : halo + h, halo : halo + w].astype(np.float32)
    p, s = geom.window
    ys = window_starts(0, h, patch_size=p, stride=s)
    xs = window_starts(0, w, patch_size=p, stride=s)
    top, left = -int(ys[0]), -int(xs[0])
    bottom, right = int(ys[-1]) + p - h, int(xs[-1]) + p - w
    xpad = np.pad(image, ((top, bottom), (left, right)), mode="symmetric")
    if geom.mode == "average":
        weight = np.ones((p, p), np.float32)
    else:
        weight = gaussian_weights(p, sigma_fraction=geom.sigma_fraction)
    acc = wsum = None
    for y in ys:
        for x in xs:
            prob = _run(predict_fn, xpad[y + top : y + top + p, x + left : x + left + p], geom.tta)
            if acc is None:
                acc = np.zeros((*xpad.shape, prob.shape[-1]), np.float32)
                wsum = np.zeros(xpad.shape, np.float32)
            acc[y + top : y + top + p, x + left : x + left + p] += prob * weight[..., None]
            wsum[y + top : y + top + p, x + left : x + left + p] += weight
    assert acc is not None and wsum is not None
    return (acc / wsum[..., None])[top : top + h, left : left + w]


class PositionNet:
    """A fake network whose output depends on the pixel's position inside its window (so every blending
    error shows) and on the input value; inputs must be multiples of 4 px."""

    multiple = 4
    halo_px = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, h, w, _ = x.shape
        yy = np.linspace(0.0, 1.0, h)[None, :, None]
        xx = np.linspace(0.0, 1.0, w)[None, None, :]
        a = x[..., 0] * yy + xx
        z = np.stack([a, 1 - a, a * a, 0.5 + 0 * a], -1)
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)


class ConstantNet:
    """Returns the same probability vector everywhere."""

    multiple = 1
    halo_px = 0

    def __init__(self, probs: Any) -> None:
        self.probs = np.asarray(probs, np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.probs, x.shape[:-1] + self.probs.shape).copy()


class Pointwise:
    """A flip/rotation-invariant fake network (each pixel on its own): TTA must change nothing."""

    multiple = 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = np.concatenate([x, 1 - x], -1)
        return (z / z.sum(-1, keepdims=True)).astype(np.float32)


def tiled_reference(image: np.ndarray, *, predict_fn: PredictFn, geom: Geometry) -> np.ndarray:
    """Tile mode as its definition reads, for any halo: tiles of ``tile_size`` on the image's global grid,
    each run on its own with ``halo`` px of context beyond the pooling grid (mirrored at the borders) and
    cropped. With the exact halo it equals :func:`reference_predict`'s single pass."""
    h, w = image.shape
    m, halo, tile = geom.multiple, geom.halo, geom.tile_size
    big = halo + 2 * max(h, w)
    xpad = np.pad(image, big, mode="symmetric")
    out: np.ndarray | None = None
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        a0, a1 = y0 // m * m - halo, -(-y1 // m) * m + halo
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            b0, b1 = x0 // m * m - halo, -(-x1 // m) * m + halo
            prob = _run(predict_fn, xpad[a0 + big : a1 + big, b0 + big : b1 + big], geom.tta)
            if out is None:
                out = np.zeros((h, w, prob.shape[-1]), np.float32)
            out[y0:y1, x0:x1] = prob[y0 - a0 : y1 - a0, x0 - b0 : x1 - b0]
    assert out is not None
    return out


def keras_fn(path: Path) -> tuple[PredictFn, dict[str, Any]]:
    """A saved model as a plain function (loaded directly, not through the worker cache) and its sidecar."""
    import keras

    from semscale.training.unet import load_model

    model, meta = load_model(path)

    def fn(x: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(x, training=False))

    return fn, meta


def make_store(tmp_path: Path, shape: tuple[int, int] = (150, 131), chunk: int = 64, seed: int = 0) -> Any:
    """A campaign store holding one random uint8 image ``im`` (with its normalisation); ``(store, image)``."""
    from semscale.kernels.norm import histogram, norm_from_histogram
    from semscale.store import create_store

    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    s = create_store(tmp_path / "c.zarr", name="t", pixel_size_um=0.04458)
    a = s.create_image("im", shape=img.shape, dtype=img.dtype, chunks=chunk)
    a[:] = img
    s.finish_image("im", norm=norm_from_histogram(histogram(img, nbins=256)))
    return s, img
