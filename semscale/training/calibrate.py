"""Class offsets of a trained member, fitted on simulated images with exact truth (``class_offsets: synthetic``).

Where part of what a network learns from are EDS-guided targets, it inherits their systematic errors, e.g.
NiO next to YSZ labelled YSZ: its labels then count some phases short, and every phase fraction a campaign
reports inherits that. The simulator gives images drawn like the training's simulated windows (at the
campaign's measured grey levels) with exact truth; on a set of them that no training saw,
:func:`calibrate_member` fits the offsets of the class log-probabilities at which the labels count each class
as the truth does (:func:`semscale.kernels.calibration.share_offsets`), and :func:`add_output_offsets` adds
them to the bias of the softmax layer, so the saved member carries them to every consumer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from semscale.errors import ModelError
from semscale.kernels.calibration import class_shares, offset_labels, share_offsets
from semscale.training.synthetic import SyntheticWindows

log = logging.getLogger(__name__)

__all__ = ["add_output_offsets", "calibrate_member", "calibration_setting"]


def calibration_setting(windows: SyntheticWindows) -> dict[str, Any]:
    """What the offsets depend on besides the weights (recorded in the sidecar; a change refits them)."""
    levels = None if windows.levels is None else [[round(float(v), 3) for v in row] for row in windows.levels]
    return {"method": "synthetic", "images": windows.n_images, "size": windows.size, "seed": windows.seed,
            "stream": windows.stream, "levels": levels, "pixel_size_um": windows.pixel_size_um}


def add_output_offsets(model: Any, offsets: np.ndarray) -> None:
    """Add ``offsets`` ``(K,)`` to the bias of ``model``'s output layer (named ``softmax``, a 1×1 conv with a
    softmax activation): its probabilities become ``p_k e^{b_k}`` renormalised."""
    try:
        layer = model.get_layer("softmax")
    except ValueError as exc:
        raise ModelError("Expected a semscale U-Net with an output layer named `softmax`. Got none; class "
                         "offsets apply to models built by semscale.training.unet only.") from exc
    bias = np.asarray(layer.bias.numpy(), np.float32)
    if bias.shape != (len(offsets),):
        raise ModelError(f"Expected {len(offsets)} output classes for the class offsets. Got bias {bias.shape}.")
    layer.bias.assign(bias + np.asarray(offsets, np.float32))


def calibrate_member(model: Any, windows: SyntheticWindows, *, classes: list[str], label: str) -> dict[str, Any]:
    """Fit class offsets for ``model`` (float32, fully convolutional) on ``windows``' images, add them to its
    output layer and return the sidecar record: the setting, the offsets and the label shares (percent of
    pixels) and accuracy on those images before and after."""
    t0 = time.perf_counter()
    k = len(classes)
    probs, truths = [], []
    for image, truth in windows.images():
        probs.append(np.asarray(model.predict_on_batch(image[None, :, :, None]), np.float32)[0])
        truths.append(truth)
    offsets = share_offsets(probs, truths, n_classes=k)
    before = [np.argmax(p, axis=-1).astype(np.uint8) for p in probs]
    after = [offset_labels(p, offsets) for p in probs]
    add_output_offsets(model, offsets)

    def pct(labels: list[np.ndarray]) -> list[float]:
        return [round(100.0 * float(v), 3) for v in class_shares(labels, n_classes=k)]

    def accuracy(labels: list[np.ndarray]) -> float:
        return round(float(np.mean([(lab == t).mean() for lab, t in zip(labels, truths)])), 5)

    shares = {"truth": pct(truths), "before": pct(before), "after": pct(after)}
    acc = {"before": accuracy(before), "after": accuracy(after)}
    rounded = [round(float(b), 5) for b in offsets]
    log.info("%s: class offsets %s on %d simulated images (shares %% %s → %s, truth %s; accuracy %.2f → %.2f %%)",
             label, dict(zip(classes, rounded)), windows.n_images, shares["before"], shares["after"],
             shares["truth"], 100 * acc["before"], 100 * acc["after"])
    return {"setting": calibration_setting(windows), "offsets": rounded, "shares_pct": shares, "accuracy": acc,
            "seconds": round(time.perf_counter() - t0, 1)}
