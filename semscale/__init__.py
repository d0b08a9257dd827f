"""semscale: Dask-scaled phase segmentation of SEM images of Ni/YSZ electrodes.

Heavy modules (Keras, TensorFlow, dask-cuda, cupy) are imported lazily inside the functions that need them,
so ``import semscale`` and ``semscale --help`` stay instant.
"""

from semscale._version import __version__

CLASSES: tuple[str, ...] = ("pore", "NiO", "Ni", "YSZ")
"""Default phase names; a label value is the index into this tuple. 255 means unlabelled / ignore."""

IGNORE_LABEL: int = 255

__all__ = ["CLASSES", "IGNORE_LABEL", "__version__"]
