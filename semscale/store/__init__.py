"""The campaign store: the only code that knows where things live in a campaign's Zarr hierarchy."""

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
