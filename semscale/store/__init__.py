"""The campaign store: the only code that knows where things live in a campaign's Zarr hierarchy.

The names below are imported on first use (PEP 562), so that ``semscale.store.location`` — which the
config needs to parse a ``store:`` value — does not import Zarr: ``semscale --help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore, create_store, open_store
    from semscale.store.ngff import (
        DEFAULT_CHUNK,
        NGFF_VERSION,
        PHASE_COLORS,
        compressor,
        label_group_metadata,
        label_metadata,
        label_pyramid,
        multiscales_metadata,
        write_dask,
    )

_HOMES = {
    "CampaignStore": "layout", "create_store": "layout", "open_store": "layout",
    "DEFAULT_CHUNK": "ngff", "NGFF_VERSION": "ngff", "PHASE_COLORS": "ngff", "compressor": "ngff",
    "label_group_metadata": "ngff", "label_metadata": "ngff", "label_pyramid": "ngff",
    "multiscales_metadata": "ngff", "write_dask": "ngff",
}

__all__ = [
    "DEFAULT_CHUNK",
    "NGFF_VERSION",
    "PHASE_COLORS",
    "CampaignStore",
    "compressor",
    "create_store",
    "label_group_metadata",
    "label_metadata",
    "label_pyramid",
    "multiscales_metadata",
    "open_store",
    "write_dask",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'semscale.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"semscale.store.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
