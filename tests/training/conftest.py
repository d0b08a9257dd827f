"""Shared helpers of the training tests: blob-shaped 4-class labels and small real Zarr campaign stores.

Helpers reach the tests through the ``blobs`` fixture (``blobs.labels``, ``blobs.add_exact``,
``blobs.add_noisy``); ``data_store`` (exact grey levels, chunks 48) and ``train_store`` (noisy, chunks 64)
are built once per test module.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from semscale.kernels.norm import histogram, norm_from_histogram
from semscale.store import CampaignStore, create_store

LEVELS = np.array([20, 80, 140, 200], np.uint8)
"""Grey value of each class in "label-shaped" images (``rint(normalised * 3)`` gives the class back)."""


def blob_labels(shape: tuple[int, int], seed: int, *, rare: bool = False) -> np.ndarray:
    """Random blob-like 4-class labels; with ``rare`` class 2 is kept to ~1-2 % of the area."""
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(4, *shape)), sigma=(0, 4, 4))
    if rare:
        f[2] -= 0.2
    return np.argmax(f, axis=0).astype(np.uint8)


def add_exact(store: CampaignStore, image_id: str, labels: np.ndarray, *, role: str = "train",
              extra: dict[str, np.ndarray] | None = None) -> None:
    """An image whose grey levels are exactly ``LEVELS[labels]`` (chunks 48), with ``target`` labels."""
    img = LEVELS[labels]
    a = store.create_image(image_id, shape=img.shape, dtype=img.dtype, chunks=48)
    a[:] = img
    store.finish_image(image_id, role=role, norm=norm_from_histogram(histogram(img, nbins=256)))
    store.write_labels(image_id, "target", labels)
    for name, lab in (extra or {}).items():
        store.write_labels(image_id, name, lab)


def add_noisy(store: CampaignStore, image_id: str, labels: np.ndarray, *, role: str = "train",
              seed: int = 0) -> None:
    """A noisy image of ``labels`` (levels 30/90/150/210, σ 8, chunks 64), with ``target`` labels."""
    rng = np.random.default_rng(seed)
    img = np.clip(np.array([30, 90, 150, 210])[labels] + rng.normal(0, 8, labels.shape), 0, 255)
    img = img.astype(np.uint8)
    a = store.create_image(image_id, shape=img.shape, dtype=img.dtype, chunks=64)
    a[:] = img
    store.finish_image(image_id, role=role, norm=norm_from_histogram(histogram(img, nbins=256)))
    store.write_labels(image_id, "target", labels)


@pytest.fixture(scope="session")
def blobs() -> SimpleNamespace:
    return SimpleNamespace(labels=blob_labels, add_exact=add_exact, add_noisy=add_noisy, LEVELS=LEVELS)


@pytest.fixture(scope="module")
def data_store(tmp_path_factory: pytest.TempPathFactory) -> CampaignStore:
    """Training images a (150×200), b (130×170); p (role predict), q (role test); exact grey levels."""
    s = create_store(tmp_path_factory.mktemp("data") / "c.zarr", name="t", pixel_size_um=0.04458)
    add_exact(s, "a", blob_labels((150, 200), 1))
    add_exact(s, "b", blob_labels((130, 170), 2))
    add_exact(s, "p", blob_labels((100, 100), 3), role="predict")
    add_exact(s, "q", blob_labels((96, 96), 4), role="test")
    return s


@pytest.fixture(scope="module")
def train_store(tmp_path_factory: pytest.TempPathFactory) -> CampaignStore:
    """Training images a (128×160), b (128×128) and p (64×64, role predict); noisy grey levels."""
    s = create_store(tmp_path_factory.mktemp("train") / "c.zarr", name="t", pixel_size_um=0.04458)
    add_noisy(s, "a", blob_labels((128, 160), 1), seed=1)
    add_noisy(s, "b", blob_labels((128, 128), 2), seed=2)
    add_noisy(s, "p", blob_labels((64, 64), 3), role="predict", seed=3)
    return s
