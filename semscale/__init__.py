"""semscale: Dask-scaled phase segmentation of SEM images of Ni/YSZ electrodes.

The public API, imported lazily so ``import semscale`` and ``semscale --help`` stay instant::

    cfg = semscale.load_config("campaign.yaml")        # validated, frozen config sections
    semscale.run_campaign(cfg)                          # ingest → label → train → predict → evaluate → stats
    store = semscale.open_store(cfg.store)              # the campaign's Zarr store
    out = semscale.predict(sem_dask_array, models=[...], cfg=cfg.inference)   # lazy, blockwise
    labels = semscale.segment_array(image, models=[...], cfg=cfg.inference)["labels"]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from semscale._version import __version__

CLASSES: tuple[str, ...] = ("pore", "NiO", "Ni", "YSZ")
"""Default phase names; a label value is the index into this tuple. 255 means unlabelled / ignore."""

IGNORE_LABEL: int = 255

EDS_ELEMENTS: tuple[str, ...] = ("Ni", "O", "Zr")
"""The EDS maps the EDS-guided labelling reads (an image with EDS maps and no target needs all of them)."""

_LAZY = {
    "load_config": "semscale.config",
    "open_store": "semscale.store",
    "run_campaign": "semscale.pipeline",
    "predict": "semscale.inference",
    "segment_array": "semscale.inference",
}

__all__ = ["CLASSES", "EDS_ELEMENTS", "IGNORE_LABEL", "__version__", *_LAZY]

if TYPE_CHECKING:
    from semscale.config import load_config as load_config
    from semscale.inference import predict as predict
    from semscale.inference import segment_array as segment_array
    from semscale.pipeline import run_campaign as run_campaign
    from semscale.store import open_store as open_store


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'semscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
