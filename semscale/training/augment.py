"""On-the-fly augmentation of training windows (pure numpy).

The 8 dihedral flips/rotations are applied identically to image and labels; Gaussian blur, contrast,
brightness and Gaussian–Poisson noise ``I' = Poisson(I·C)/C + N(0, σ)`` (C = 255) change the image only.
Every random choice comes from the generator the caller passes, so a window's augmentation depends only on
that generator's seed.
"""

from __future__ import annotations

import numpy as np

from semscale.config.sections import Augment

__all__ = ["Augment", "augment_pair", "dihedral"]


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0..7) of the dihedral group on the last two axes: ``rot90^(k%4)``, then a flip if k≥4."""
    out = np.rot90(a, k % 4, axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def augment_pair(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, augment: Augment
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (image float32 (P, P), labels uint8 (P, P)) pair; geometric ops act on both alike.

    Photometric ops (blur, contrast, brightness, noise) change the image only; labels never change
    except by the same flip/rotation as the image.
    """
    if augment.dihedral:
        k = int(rng.integers(8))
        image, labels = dihedral(image, k), dihedral(labels, k)
    img = image.astype(np.float32, copy=True)
    if augment.blur_prob and rng.random() < augment.blur_prob:
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, sigma=float(rng.uniform(*augment.blur_sigma)), mode="reflect")
    if augment.contrast_prob and rng.random() < augment.contrast_prob:
        m = np.float32(img.mean())
        img = (img - m) * np.float32(rng.uniform(*augment.contrast)) + m
    if augment.brightness_prob and rng.random() < augment.brightness_prob:
        img = img + np.float32(rng.uniform(*augment.brightness))
    if augment.noise_prob and rng.random() < augment.noise_prob:
        c = augment.poisson_scale
        img = rng.poisson(np.clip(img, 0.0, None) * c).astype(np.float32) / np.float32(c)
        sigma = float(rng.uniform(*augment.noise_sigma))
        if sigma > 0:
            img = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return img.astype(np.float32, copy=False), labels
