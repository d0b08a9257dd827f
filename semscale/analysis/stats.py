"""Microstructure statistics over the campaign's time series, as an :class:`xarray.Dataset`.

Dimensions ``image`` × ``phase``; coordinates ``sample``, ``oxidation_min`` and ``role`` on ``image``.
Phase fractions are area fractions of the labelled pixels (255 = unlabelled is excluded), computed blockwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale import IGNORE_LABEL

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["campaign_stats", "phase_counts", "plot_fractions", "write_stats"]


def phase_counts(labels: Any, *, n_classes: int) -> Any:
    """Pixel count of each class ``0..n_classes-1`` in a (dask or numpy) label image; 255 ignored."""
    import dask.array as da

    def _count(block: np.ndarray) -> np.ndarray:
        counts = np.bincount(block.ravel(), minlength=256)[:n_classes]
        return counts.astype(np.int64)[None, None, :]

    arr = labels if isinstance(labels, da.Array) else da.from_array(np.asarray(labels))
    per_block = da.map_blocks(_count, arr, new_axis=2, chunks=(1, 1, n_classes), dtype=np.int64,
                              meta=np.empty((0, 0, 0), np.int64))
    return per_block.sum(axis=(0, 1))


def campaign_stats(store: CampaignStore, *, model: str) -> Any:
    """Phase fractions of every predicted image (and of its target / truth labels where present)."""
    import dask
    import xarray as xr

    classes = list(store.classes)
    K = len(classes)
    ids = [i for i in store.image_ids() if store.has_predictions(model, i, complete=False)]
    sources = {"model": lambda i: store.prediction_labels(model, i),
               "target": lambda i: store.labels(i, "target") if store.has_labels(i, "target") else None,
               "truth": lambda i: store.labels(i, "truth") if store.has_labels(i, "truth") else None}
    lazy: dict[str, list[Any]] = {name: [] for name in sources}
    for i in ids:
        for name, get in sources.items():
            arr = get(i)
            lazy[name].append(None if arr is None else phase_counts(arr, n_classes=K))
    flat = [c for cs in lazy.values() for c in cs if c is not None]
    computed = iter(dask.compute(*flat))
    data_vars = {}
    for name, counts in lazy.items():
        frac = np.full((len(ids), K), np.nan)
        for row, c in enumerate(counts):
            if c is not None:
                c = np.asarray(next(computed), dtype=np.float64)
                frac[row] = c / max(c.sum(), 1.0)
        if name == "model" or not np.isnan(frac).all():
            data_vars[f"fraction_{name}" if name != "model" else "fraction"] = (
                ("image", "phase"), frac,
                {"units": "1", "long_name": f"area fraction ({name})" if name != "model" else "area fraction",
                 "description": f"share of labelled pixels per phase, from {name} labels"},
            )
    attrs = [store.image_attrs(i) for i in ids]
    # strings as object arrays: Zarr v3 stores them as variable-length UTF-8 (readable by other Zarr
    # libraries), not as numpy's fixed-width UTF-32, which has no Zarr v3 specification
    def text(values: list[str]) -> np.ndarray:
        return np.array(values, dtype=object)

    coords = {
        "image": text(ids),
        "phase": text(classes),
        "sample": ("image", text([str(a.get("sample") or "") for a in attrs])),
        "oxidation_min": ("image", [np.nan if a.get("oxidation_min") is None else float(a["oxidation_min"])
                                    for a in attrs], {"units": "min"}),
        "role": ("image", text([str(a.get("role") or "") for a in attrs])),
    }
    return xr.Dataset(data_vars, coords=coords,
                      attrs={"model": model, "pixel_size_um": store.pixel_size_um, "ignore_label": IGNORE_LABEL})


def plot_fractions(ds: Any, path: str | Path) -> Path:
    """Phase fraction against oxidation time (one colour per phase; truth dashed where present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semscale.store import PHASE_COLORS

    order = np.argsort(ds["oxidation_min"].values, kind="stable")
    t = ds["oxidation_min"].values[order]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for k, phase in enumerate(ds["phase"].values):
        rgba = np.array(PHASE_COLORS.get(str(phase), (100, 100, 100, 255))) / 255.0
        ax.plot(t, ds["fraction"].values[order, k], "o-", color=rgba, label=f"{phase} (U-Net)")
        if "fraction_truth" in ds:
            ax.plot(t, ds["fraction_truth"].values[order, k], "x--", color=rgba, alpha=0.7,
                    label=f"{phase} (truth)")
    ax.set_xlabel("oxidation time [min]")
    ax.set_ylabel("area fraction")
    if np.nanmax(t) > 20 * max(np.nanmin(t[t > 0]) if (t > 0).any() else 1, 1e-9):
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set_ylim(0, max(0.6, float(np.nanmax(ds["fraction"].values)) + 0.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"Phase fractions over oxidation time — model {ds.attrs.get('model', '')}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_stats(store: CampaignStore, ds: Any) -> dict[str, str]:
    """Write ``ds`` into the store (``stats/``, Zarr via xarray) and CSV + PNG into ``report/``."""
    ds.to_zarr(str(store.path), group=store.stats_group, mode="w", zarr_format=3, consolidated=False)
    report = store.report_dir()
    csv = report / "phase_fractions.csv"
    ds.to_dataframe().reset_index().to_csv(csv, index=False)
    png = plot_fractions(ds, report / "phase_fractions.png")
    log.info("stats: %s, %s", csv, png)
    return {"zarr": str(store.path / store.stats_group), "csv": str(csv), "plot": str(png)}
