"""Training data from the simulator: domain-randomised images with their exact truth.

Two uses: :func:`write_synthetic_store` puts ``n`` randomised images in a campaign store (the pretraining of
:mod:`semscale.training.pretrain` trains on their ``truth``), and :class:`SyntheticWindows` serves windows of
randomised images held in memory, which the sampler mixes into the campaign's batches
(``training.synthetic_fraction``) so that fine-tuning on EDS-guided targets keeps seeing exact labels.
Each image has its own setting (:func:`semscale.synth.randomise.random_params`, never an evaluation-only
setting) and oxidation time; everything is seeded.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from semscale.kernels.norm import apply_norm, histogram, norm_from_histogram

__all__ = ["SyntheticWindows", "simulate_random", "write_synthetic_store"]


def simulate_random(rng: np.random.Generator, *, size: int) -> tuple[Any, Any]:
    """One randomised ``size``² px image (no EDS): ``(SynthImage, SimParams)``."""
    from semscale.synth import simulate
    from semscale.synth.randomise import random_params, random_time

    params, time_min = random_params(rng), random_time(rng)
    sim = simulate((size, size), oxidation_min=time_min, seed=int(rng.integers(2**31)), with_eds=False,
                   params=params)
    return sim, params


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

    def __init__(self, *, n_images: int, size: int, seed: int) -> None:
        self.n_images, self.size, self.seed = int(n_images), int(size), int(seed)
        self._images: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"n_images": self.n_images, "size": self.size, "seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def images(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The normalised images and their truth, simulated once."""
        with self._lock:
            if self._images is None:
                rng = np.random.default_rng([self.seed, 0x5EED, 1])
                out = []
                for _ in range(self.n_images):
                    sim, _params = simulate_random(rng, size=self.size)
                    norm = norm_from_histogram(histogram(sim.sem, nbins=int(np.iinfo(sim.sem.dtype).max) + 1))
                    out.append((apply_norm(sim.sem, norm).astype(np.float32), sim.truth.astype(np.uint8)))
                self._images = out
            return self._images

    def window(self, rng: np.random.Generator, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """One ``patch_size``² window of a random image at a random position."""
        p = int(patch_size)
        if p > self.size:
            raise ValueError(f"synthetic images of {self.size} px are smaller than the {p} px window")
        images = self.images()
        img, lab = images[int(rng.integers(len(images)))]
        y, x = (int(v) for v in rng.integers(0, self.size - p + 1, size=2))
        return img[y : y + p, x : x + p], lab[y : y + p, x : x + p]
