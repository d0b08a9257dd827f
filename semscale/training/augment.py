"""On-the-fly augmentation of training windows (pure numpy).

The 8 dihedral flips/rotations are applied identically to image and labels; Gaussian blur, contrast,
brightness and Gaussian–Poisson noise ``I' = Poisson(I·C)/C + N(0, σ)`` (C = 255) change the image only.
Every random choice comes from the generator the caller passes, so a window's augmentation depends only on
that generator's seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from semscale.errors import ConfigError

__all__ = ["Augment", "augment_pair", "dihedral"]


@dataclass(frozen=True)
class Augment:
    """On-the-fly augmentation settings; intensities in normalised units (image range ≈ 0..1)."""

    dihedral: bool = True
    """Random one of the 8 flips/rotations, identical on image and labels."""
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    """Gaussian blur σ range (px)."""
    contrast_prob: float = 0.5
    contrast: tuple[float, float] = (0.8, 1.25)
    """Contrast factor range, applied about the patch mean."""
    brightness_prob: float = 0.5
    brightness: tuple[float, float] = (-0.1, 0.1)
    """Additive brightness range."""
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (0.0, 0.03)
    """Gaussian σ range of the Gaussian–Poisson noise."""
    poisson_scale: float = 255.0
    """C in ``I' = Poisson(I·C)/C + N(0, σ)``."""

    @classmethod
    def none(cls) -> Augment:
        return cls(dihedral=False, blur_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, noise_prob=0.0)

    @classmethod
    def geometric_only(cls) -> Augment:
        return cls(blur_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, noise_prob=0.0)

    @classmethod
    def coerce(cls, value: bool | Mapping[str, Any] | Augment | None) -> Augment:
        """``True`` → defaults, ``False``/``None`` → none, a dict → defaults updated by its keys."""
        if isinstance(value, Augment):
            return value
        if value is None or value is False:
            return cls.none()
        if value is True:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"Expected augmentation keys among {sorted(names)} for `augment`. Got {unknown}.")
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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
