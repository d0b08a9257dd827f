"""Training data from the simulator: domain-randomised images with their exact truth.

Two uses: :func:`write_synthetic_store` puts ``n`` randomised images in a campaign store (the pretraining of
:mod:`semscale.training.pretrain` trains on their ``truth``), and :class:`SyntheticWindows` serves windows of
randomised images held in memory, which the sampler mixes into the campaign's batches
(``training.synthetic_fraction``) so that fine-tuning on EDS-guided targets keeps seeing exact labels.
Each image has its own setting (:func:`semscale.synth.randomise.random_params`, never an evaluation-only
setting) and oxidation time; everything is seeded. With ``training.synthetic_levels: campaign`` the phase
grey levels and per-grain contrast of those settings are centred on the campaign's own
(:func:`campaign_levels`), measured on its training images and targets.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.kernels.norm import apply_norm, histogram, norm_from_histogram

if TYPE_CHECKING:  # the simulator loads only where simulated windows are used
    from semscale.synth.levels import Levels

__all__ = ["SyntheticWindows", "campaign_levels", "simulate_random", "write_synthetic_store"]

log = logging.getLogger(__name__)


LEVELS_CROP_PX = 1024
"""Edge of the central crop of each training image that :func:`campaign_levels` measures (px)."""

REFERENCE_REPEATS = 4
"""Simulated references per training image: a few grains decide one image's NiO level (± 3-4 grey levels
between seeds at 512² px), so the reference averages several."""


def simulate_random(rng: np.random.Generator, *, size: int, levels: Levels | None = None,
                    pixel_size_um: float | None = None) -> tuple[Any, Any]:
    """One randomised ``size``² px image (no EDS): ``(SynthImage, SimParams)``; ``levels`` centres the phase
    grey levels (:func:`semscale.synth.randomise.random_params`), ``pixel_size_um`` (default: the
    calibration's) sets the scale of every physical length."""
    from semscale.synth import simulate
    from semscale.synth.params import DEFAULT_PIXEL_SIZE_UM
    from semscale.synth.randomise import random_params, random_time

    params, time_min = random_params(rng, levels=levels), random_time(rng)
    sim = simulate((size, size), oxidation_min=time_min, seed=int(rng.integers(2**31)), with_eds=False,
                   params=params, pixel_size_um=pixel_size_um or DEFAULT_PIXEL_SIZE_UM)
    return sim, params


def _central(a: Any, edge: int) -> np.ndarray:
    """The central ``edge``² px (at most) of a 2-D array, read into memory."""
    h, w = a.shape
    y, x = max((h - edge) // 2, 0), max((w - edge) // 2, 0)
    return np.asarray(a[y : y + edge, x : x + edge])


def campaign_levels(store: Any, image_ids: Sequence[str], *, label_source: str, seed: int = 0) -> Levels:
    """Simulator inputs ``(base, grain_sd)`` that reproduce the phase grey levels of ``image_ids``.

    Measures the central :data:`LEVELS_CROP_PX`² px of each image and its ``label_source`` labels relative
    to YSZ (the last class; :func:`~semscale.synth.levels.measure_levels`), then the same on the calibration
    simulated :data:`REFERENCE_REPEATS` times at each image's oxidation time (30 min where unknown), crop size and the
    store's pixel size with its exact truth, and moves the calibration's inputs by the difference
    (:func:`~semscale.synth.levels.simulator_levels`).
    """
    from semscale.synth import simulate
    from semscale.synth.levels import measure_levels, pool_levels, relative_to, simulator_levels
    from semscale.synth.params import DEFAULT_PARAMS, DEFAULT_PIXEL_SIZE_UM

    n_classes = len(store.classes)
    pixel_size_um = store.meta.get("pixel_size_um") or DEFAULT_PIXEL_SIZE_UM
    anchor = n_classes - 1  # YSZ: it does not oxidise
    measured, reference, raw = [], [], []
    for i, image_id in enumerate(image_ids):
        sem = _central(store.sem_array(image_id), LEVELS_CROP_PX)
        labels = _central(store.label_array(image_id, label_source), LEVELS_CROP_PX)
        measured.append(relative_to(measure_levels(sem, labels, n_classes=n_classes), anchor))
        time_min = store.image_attrs(image_id).get("oxidation_min")
        for r in range(REFERENCE_REPEATS):  # 8-bit: the simulator's own grey levels
            sim = simulate(sem.shape, oxidation_min=30.0 if time_min is None else float(time_min),
                           seed=(int(seed) * 1000 + i) * REFERENCE_REPEATS + r, with_eds=False,
                           pixel_size_um=pixel_size_um)
            raw.append(measure_levels(sim.sem, sim.truth, n_classes=n_classes))
            reference.append(relative_to(raw[-1], anchor))
    pooled = pool_levels(measured)
    missing = [store.classes[k] for k in range(1, n_classes) if not pooled.pixels[k]]
    if missing:
        what = store.classes[anchor] if not pooled.pixels[anchor] else ", ".join(missing)
        log.warning("synthetic levels: no interior of %s in the %s labels of %s; the calibration's levels "
                    "stand in for %s", what, label_source, ", ".join(image_ids),
                    "every phase" if not pooled.pixels[anchor] else "those")
    return simulator_levels(pooled, pool_levels(reference), base=DEFAULT_PARAMS.base,
                            grain_sd=DEFAULT_PARAMS.grain_sd, unit=pool_levels(raw).base[anchor])


def write_synthetic_store(path: Path, *, n_images: int, size: int, seed: int, chunks: int = 256) -> Any:
    """A campaign store of ``n_images`` domain-randomised ``size``² px images with ``truth`` labels (role
    ``train``); the setting of each image is recorded in its attrs (``simulated_params``)."""
    from semscale.store import create_store
    from semscale.synth.campaign import add_to_store
    from semscale.synth.params import DEFAULT_PIXEL_SIZE_UM

    store = create_store(path, name="synthetic-pretraining", pixel_size_um=DEFAULT_PIXEL_SIZE_UM)
    rng = np.random.default_rng([seed, 0x5EED])
    for i in range(n_images):
        sim, params = simulate_random(rng, size=size)
        image_id = f"syn{i:04d}"
        if image_id not in store.image_ids():
            add_to_store(store, image_id, sim, chunks=chunks, role="train",
                         simulated_params=json.loads(json.dumps(dataclasses.asdict(params))))
    return store


class SyntheticWindows:
    """``n_images`` randomised ``size``² px images (simulated on first use, in memory) and their truth.

    :meth:`window` draws one ``(image float32 (P, P) normalised per image as the store does, labels uint8)``
    pair from ``rng``. Thread-safe; pickles without its images (rebuilt, identically, where unpickled).
    """

    def __init__(self, *, n_images: int, size: int, seed: int, levels: Levels | None = None,
                 pixel_size_um: float | None = None, stream: int = 1, zoom: tuple[float, float] = (1.0, 1.0)
                 ) -> None:
        self.n_images, self.size, self.seed, self.stream = int(n_images), int(size), int(seed), int(stream)
        self.levels, self.pixel_size_um = levels, pixel_size_um
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self._images: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "size": self.size, "seed": self.seed, "levels": self.levels,
                "pixel_size_um": self.pixel_size_um, "stream": self.stream, "zoom": self.zoom}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def images(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The normalised images and their truth, simulated once."""
        with self._lock:
            if self._images is None:
                rng = np.random.default_rng([self.seed, 0x5EED, self.stream])
                out = []
                for _ in range(self.n_images):
                    sim, _params = simulate_random(rng, size=self.size, levels=self.levels,
                                                   pixel_size_um=self.pixel_size_um)
                    norm = norm_from_histogram(histogram(sim.sem, nbins=int(np.iinfo(sim.sem.dtype).max) + 1))
                    out.append((apply_norm(sim.sem, norm).astype(np.float32), sim.truth.astype(np.uint8)))
                self._images = out
            return self._images

    def held_out(self, n_images: int) -> SyntheticWindows:
        """``n_images`` other images drawn the same way (same levels, size and pixel size; another random
        stream, so none of them is one of these)."""
        return SyntheticWindows(n_images=n_images, size=self.size, seed=self.seed, levels=self.levels,
                                pixel_size_um=self.pixel_size_um, stream=self.stream + 1, zoom=self.zoom)

    def window(self, rng: np.random.Generator, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """One ``patch_size``² window of a random image at a random position, resampled by a factor z drawn
        log-uniformly in ``zoom`` (a ``round(patch_size / z)``² px crop, linear for the image, nearest for the
        truth: z < 1 shows grains, rims and the blur smaller in px). No draw when ``zoom`` is (1, 1)."""
        p = int(patch_size)
        lo, hi = self.zoom
        z = lo if lo == hi else float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        q = max(round(p / z), 1)
        if q > self.size:
            raise ValueError(f"synthetic images of {self.size} px are smaller than the {q} px window "
                             f"({p} px at zoom {z:.3g})")
        images = self.images()
        img, lab = images[int(rng.integers(len(images)))]
        y, x = (int(v) for v in rng.integers(0, self.size - q + 1, size=2))
        img, lab = img[y : y + q, x : x + q], lab[y : y + q, x : x + q]
        if q == p:
            return img, lab
        from scipy import ndimage

        f = p / q  # grid_mode: pixel areas align, and the output is exactly p × p
        return (ndimage.zoom(img, f, order=1, mode="nearest", grid_mode=True),
                ndimage.zoom(lab, f, order=0, mode="nearest", grid_mode=True))
