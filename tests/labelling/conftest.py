"""Fixtures of the labelling tests: a tiny simulated Ni/YSZ/NiO/pore image with EDS maps, and a store maker."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

F = 4
"""EDS factor of the toy images."""
CONC = {"Ni": (0.0, 0.5, 1.0, 0.0), "O": (0.0, 0.5, 0.0, 0.62), "Zr": (0.0, 0.0, 0.0, 0.3)}
GREY = (0.08, 0.42, 0.55, 0.68)


def toy(shape=(192, 224), *, seed=0, shift=(0.0, 0.0), eds_sigma=4.0, rate=80.0, grain=16.0,
        phases=(0.3, 0.2, 0.2, 0.3)):
    """A tiny Ni/YSZ/NiO/pore image: Voronoi grains (class shares ``phases``), SEM grey levels + texture +
    noise, EDS maps that integrate f×f SEM blocks displaced by ``shift`` (SEM px; as in semscale.synth),
    Poisson counts. Returns ``(sem uint8, truth uint8, {element: counts})``."""
    rng = np.random.default_rng(seed)
    h, w = shape
    pad = 24
    hp, wp = h + 2 * pad, w + 2 * pad
    n = int(hp * wp / grain**2)
    pts = rng.uniform(0, (hp, wp), size=(n, 2))
    cls_of = rng.choice(4, size=n, p=phases)
    yy, xx = np.mgrid[0:hp, 0:wp]
    _, idx = cKDTree(pts).query(np.c_[yy.ravel(), xx.ravel()])
    truth_p = cls_of[idx].reshape(hp, wp).astype(np.uint8)
    sem = np.asarray(GREY, np.float32)[truth_p] + rng.normal(0, 0.04, (hp, wp)).astype(np.float32)
    sem = ndimage.gaussian_filter(sem, 0.8)
    core = (slice(pad, pad + h), slice(pad, pad + w))
    sem8 = np.clip(sem[core] * 255, 0, 255).astype(np.uint8)
    eds = {}
    he, we = math.ceil(h / F), math.ceil(w / F)
    for el, c in CONC.items():
        b = ndimage.gaussian_filter(np.asarray(c, np.float32)[truth_p], eds_sigma)
        b = ndimage.shift(b, (-shift[0], -shift[1]), order=1, mode="nearest")  # b'(y) = b(y + shift)
        sub = b[pad : pad + he * F, pad : pad + we * F]
        block = sub.reshape(he, F, we, F).mean(axis=(1, 3))
        eds[el] = rng.poisson(1.0 + rate * block).astype(np.uint16)
    return sem8, truth_p[core].copy(), eds


def make_store(path: Path, images: dict[str, Any], *, chunks: int = 64) -> Any:
    """A campaign store on disk holding ``{id: (sem, truth, eds or None)}``."""
    from semscale.kernels.norm import histogram, norm_from_histogram
    from semscale.store import create_store

    s = create_store(path, name="t", pixel_size_um=0.04458)
    for image_id, (sem, truth, eds) in images.items():
        a = s.create_image(image_id, shape=sem.shape, dtype=sem.dtype, chunks=chunks)
        a[:] = sem
        s.finish_image(image_id, norm=norm_from_histogram(histogram(sem, nbins=256)))
        s.write_labels(image_id, "truth", truth)
        if eds:
            s.write_eds(image_id, eds, factor=F, chunks=32)
    return s


@pytest.fixture(scope="session")
def toy_image() -> Callable[..., Any]:
    """:func:`toy`, the image maker."""
    return toy


@pytest.fixture(scope="session")
def store_of() -> Callable[..., Any]:
    """:func:`make_store`, the store maker."""
    return make_store
