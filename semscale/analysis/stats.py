"""The campaign's microstructure statistics over its time series, as :class:`xarray.Dataset` objects.

:func:`campaign_stats` measures every image (:func:`semscale.analysis.microstructure.measure`) from each
label source — the primary one (a model's predictions, or a label image) without suffix, ``target`` and
``truth`` with ``_target`` / ``_truth`` suffixes — into one Dataset (dims ``image``, ``phase``, ``pair``,
``quantile``, ``bound``; coords ``sample``, ``oxidation_min``, ``role``, ``trained``). Rows whose labels
have not changed since the stored statistics are reused, so a rerun is a no-op. :func:`summarise` gives
the per-(sample, oxidation time) means and the model's errors against targets and truth on the images it
was not trained on. :func:`update_stats` ties them to the store and writes the CSV, netCDF and plots.

The variable names (:data:`VARIABLES`) are the contract other tools read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale._version import __version__
from semscale.config import StatsConfig
from semscale.errors import StoreError
from semscale.kernels.morphometry import CountLayout
from semscale.store.location import writing

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["VARIABLES", "Source", "campaign_stats", "summarise", "text_values", "update_stats", "write_tables"]

BOUNDS = ("lower", "upper")

VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "fraction": (("phase",), "1", "area fraction of the labelled pixels"),
    "fraction_ci": (("phase", "bound"), "1", "bootstrap interval of the area fraction"),
    "phase_area": (("phase",), "um2", "area of the phase"),
    "pixel_count": (("phase",), "1", "pixels of the phase"),
    "labelled_area": ((), "um2", "labelled area (unlabelled pixels excluded)"),
    "oxidation_degree": ((), "1", "oxidation degree, oxidised / (oxidised + metal) area"),
    "oxidation_degree_ci": (("bound",), "1", "bootstrap interval of the oxidation degree"),
    "tpb_count": ((), "1", "active triple-phase-boundary corners"),
    "tpb_density": ((), "um-2", "active triple-phase-boundary points per labelled area"),
    "tpb_density_ci": (("bound",), "um-2", "bootstrap interval of the TPB density"),
    "tpb_length_density": ((), "um-2", "active TPB length per volume, 2 x TPB density (um/um3)"),
    "tpb_length_density_ci": (("bound",), "um-2", "bootstrap interval of the TPB length density"),
    "interface_density": (("pair",), "um-1", "interface length per labelled area (Crofton, 4 directions)"),
    "interface_density_ci": (("pair", "bound"), "um-1", "bootstrap interval of the interface density"),
    "size_quantile": (("phase", "quantile"), "um",
                      "quantile of the equivalent-disk diameter of the phase's connected components"),
    "component_count": (("phase",), "1", "connected components of the phase in the size distribution"),
    "largest_component_share": (("phase",), "1", "share of the phase's area in its largest component"),
}
"""Per-image variables: name -> (dims after ``image``, UDUNITS units, long name). Each exists once per
label source: without suffix for the primary source, with ``_target`` / ``_truth`` for those labels."""

SPREAD = ("fraction", "oxidation_degree", "tpb_density", "tpb_length_density", "interface_density")
"""Values whose spread over an ensemble's members is stored as ``<name>_member_std`` (primary model only)."""

_DESCRIPTIONS = {
    "tpb_count": "2x2 pixel windows, all four pixels labelled, that hold all three TPB phases (-1: the image "
                 "has no such labels)",
    "tpb_length_density": "stereological estimate L_V = 2 P_A; assumes an isotropic microstructure",
    "interface_density": "L = (pi/8) sum_d s_d n_d over the 0, 90, 45, 135 degree grid directions "
                         "(s_d line spacing, n_d transitions between the pair's phases)",
    "size_quantile": "face-connected (4-neighbour) components, joined across chunk edges; components "
                     "touching the image edge are kept as cut",
    "largest_component_share": "face-connected (4-neighbour) components",
    "pixel_count": "-1: the image has no such labels",
}


@dataclass(frozen=True)
class Source:
    """One label source of the statistics: ``suffix`` of its variables and the store's source key."""

    name: str
    suffix: str
    key: tuple[str, str]


def sources_for(*, model: str | None, labels: str | None) -> list[Source]:
    """The primary source (``model``'s predictions, else label image ``labels``) and the target/truth
    labels that are not the primary one."""
    if model is None and labels is None:
        raise StoreError("Expected a model or a label image to take statistics of. Got neither.")
    primary = Source(f"model {model}", "", ("predictions", model)) if model is not None else Source(
        f"labels {labels}", "", ("labels", str(labels)))
    others = [Source(f"labels {n}", f"_{n}", ("labels", n)) for n in ("target", "truth") if n != labels]
    return [primary, *others]


def _available(store: CampaignStore, image_id: str, src: Source) -> bool:
    kind, name = src.key
    if kind == "predictions":
        return store.has_predictions(name, image_id)
    return store.has_labels(image_id, name)


def _empty(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name in ("pixel_count", "tpb_count", "component_count"):
        return np.full(shape, -1, np.int64)
    return np.full(shape, np.nan)


def _settings(cfg: StatsConfig, sources: Sequence[Source], pixel_size_um: float) -> str:
    measures = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "netcdf"}  # files, not numbers
    return json.dumps({"stats": measures, "pixel_size_um": pixel_size_um,
                       "sources": [[s.suffix, *s.key] for s in sources]}, sort_keys=True)


def campaign_stats(
    store: CampaignStore, cfg: StatsConfig = StatsConfig(),  # noqa: B008 - frozen
    *, model: str | None = None, labels: str | None = None, previous: Any = None,
) -> tuple[Any, list[str]]:
    """The per-image statistics Dataset and the ids of the images measured now (the others are reused
    from ``previous``, a stored Dataset, where their labels and the settings are unchanged).

    Images: those with complete predictions of ``model`` (or with label image ``labels``).
    """
    from semscale.analysis.microstructure import measure

    classes = list(store.classes)
    K = len(classes)
    layout = CountLayout(K)
    srcs = sources_for(model=model, labels=labels)
    ids = [i for i in store.image_ids() if _available(store, i, srcs[0])]
    if not ids:
        what = f"complete predictions of model `{model}`" if model else f"labels `{labels}`"
        raise StoreError(f"Expected images with {what} in {store.path}. Got none; run `semscale predict` "
                         "(or choose --labels target|truth).")
    settings = _settings(cfg, srcs, store.pixel_size_um)
    old_tokens: dict[str, dict[str, str]] = {}
    if previous is not None and previous.attrs.get("semscale_settings") == settings:
        old_tokens = json.loads(previous.attrs.get("semscale_tokens", "{}"))
    sizes = {"phase": K, "pair": layout.n_pairs, "quantile": len(cfg.quantiles), "bound": 2}
    data: dict[str, np.ndarray] = {}
    for src in srcs:
        for name, (dims, _, _) in VARIABLES.items():
            data[name + src.suffix] = _empty(name, (len(ids), *(sizes[d] for d in dims)))
    for name in SPREAD:
        data[f"{name}_member_std"] = _empty(name, (len(ids), *(sizes[d] for d in VARIABLES[name][0])))
    tokens: dict[str, dict[str, str]] = {}
    measured = []
    for row, image_id in enumerate(ids):
        here = {s.suffix: store.source_token(image_id, s.key) for s in srcs if _available(store, image_id, s)}
        tokens[image_id] = here
        reuse = old_tokens.get(image_id) == here
        if not reuse:
            measured.append(image_id)
        t0 = time.perf_counter()
        for src in srcs:
            if src.suffix not in here:
                continue
            if reuse:
                values = {n: previous[n + src.suffix].sel(image=image_id).values for n in VARIABLES}
                if not src.suffix:
                    values |= {f"{n}_member_std": previous[f"{n}_member_std"].sel(image=image_id).values
                               for n in SPREAD if f"{n}_member_std" in previous}
            else:
                arr, _ = store.label_source(image_id, src.key)
                values = measure(arr, cfg=cfg, classes=classes, pixel_size_um=store.pixel_size_um)
                if not src.suffix:
                    values |= _member_spread(store, image_id, src, cfg=cfg, classes=classes)
            for name in VARIABLES:
                data[name + src.suffix][row] = values[name]
            for name in SPREAD:
                if f"{name}_member_std" in values:
                    data[f"{name}_member_std"][row] = values[f"{name}_member_std"]
        if not reuse:
            log.info("stats: %s measured (%s) in %.1f s", image_id, ", ".join(s.name for s in srcs
                                                                        if s.suffix in here),
                     time.perf_counter() - t0)
    ds = _dataset(store, cfg, ids, data, srcs)
    ds.attrs.update(semscale_settings=settings, semscale_tokens=json.dumps(tokens, sort_keys=True))
    return ds, measured


def _member_spread(store: CampaignStore, image_id: str, src: Source, *, cfg: StatsConfig,
                   classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Standard deviation (ddof 1) over an ensemble's members of each :data:`SPREAD` value, from the
    members' own labels; empty for a single model or labels without members."""
    from semscale.analysis.microstructure import measure

    kind, model = src.key
    members = store.predictions(model, image_id).get("members") if kind == "predictions" else None
    if members is None or members.shape[0] < 2:
        return {}
    no_ci = dataclasses.replace(cfg, bootstrap=0)
    per = [measure(members[m], cfg=no_ci, classes=classes, pixel_size_um=store.pixel_size_um)
           for m in range(members.shape[0])]
    return {f"{n}_member_std": np.std([p[n] for p in per], axis=0, ddof=1) for n in SPREAD}


def text_values(values: Sequence[str]) -> np.ndarray:
    # object arrays: Zarr v3 stores them as variable-length UTF-8 strings (readable by other Zarr
    # libraries), not as numpy's fixed-width UTF-32, which has no Zarr v3 specification
    return np.array(list(values), dtype=object)


def _dataset(store: CampaignStore, cfg: StatsConfig, ids: Sequence[str], data: Mapping[str, np.ndarray],
             srcs: Sequence[Source]) -> Any:
    import xarray as xr

    classes = list(store.classes)
    layout = CountLayout(len(classes))
    attrs = [store.image_attrs(i) for i in ids]
    pct = f"{100 * cfg.confidence:g} %"
    data_vars = {}
    for src in srcs:
        if src.suffix and not np.isfinite(data["fraction" + src.suffix]).any():
            continue  # no image has these labels
        for name, (dims, units, long_name) in VARIABLES.items():
            label = long_name.replace("bootstrap interval", f"{pct} block-bootstrap interval")
            var_attrs = {"units": units, "long_name": f"{label} ({src.name})", "source": src.name}
            if name in _DESCRIPTIONS:
                var_attrs["description"] = _DESCRIPTIONS[name]
            data_vars[name + src.suffix] = (("image", *dims), data[name + src.suffix], var_attrs)
    for name in SPREAD:
        if np.isfinite(data[f"{name}_member_std"]).any():
            dims, units, long_name = VARIABLES[name]
            data_vars[f"{name}_member_std"] = (("image", *dims), data[f"{name}_member_std"], {
                "units": units, "long_name": f"spread over the ensemble's members: {long_name} ({srcs[0].name})",
                "description": "standard deviation (ddof 1) of the value measured on each member's own labels"})
    roles = [str(a.get("role") or "") for a in attrs]
    coords = {
        "image": ("image", text_values(ids), {"long_name": "image id"}),
        "phase": ("phase", text_values(classes), {"long_name": "phase"}),
        "pair": ("pair", text_values([f"{classes[i]}|{classes[j]}" for i, j in layout.pairs]),
                 {"long_name": "phase pair of an interface"}),
        "quantile": ("quantile", np.asarray(cfg.quantiles, float), {"units": "1", "long_name": "quantile"}),
        "bound": ("bound", text_values(BOUNDS), {"long_name": "interval bound"}),
        "sample": ("image", text_values([str(a.get("sample") or "") for a in attrs]), {"long_name": "sample"}),
        "oxidation_min": ("image", np.array([np.nan if a.get("oxidation_min") is None
                                             else float(a["oxidation_min"]) for a in attrs]),
                          {"units": "min", "long_name": "oxidation time"}),
        "role": ("image", text_values(roles), {"long_name": "role of the image in the campaign"}),
        "trained": ("image", np.array([r == "train" for r in roles]),
                    {"long_name": "image used to train the model (not a fair test)"}),
    }
    tile_px = cfg.tile_px(store.pixel_size_um)
    return xr.Dataset(data_vars, coords=coords, attrs={
        "Conventions": "CF-1.10",
        "title": f"Microstructure statistics of campaign {store.meta.get('name', '')}",
        "history": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} semscale {__version__} stats",
        "source": f"semscale {__version__}; primary labels: {srcs[0].name}",
        "pixel_size_um": store.pixel_size_um,
        "ignore_label": IGNORE_LABEL,
        "bootstrap": f"{cfg.bootstrap} draws of tiles of {tile_px} px ({tile_px * store.pixel_size_um:.3g} um, "
                     f"about five grain diameters), resampled with replacement; {pct} percentile intervals",
        "min_component_px": cfg.min_component_px,
        "tpb_phases": " ".join(cfg.tpb_phases),
        "oxidation_phases": " ".join(cfg.oxidation),
    })


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over the first axis of the finite entries; NaN where there are none (no warning)."""
    ok = np.isfinite(values)
    n = ok.sum(axis=0)
    total = np.where(ok, values, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def summarise(ds: Any) -> Any:
    """Per (sample, oxidation time): means over the images of each value; and the primary source's
    fraction errors (percentage points) against target and truth: per time, and as MAE, RMSE and bias per
    phase over the images that were not used for training."""
    import xarray as xr

    timed = ds.isel(image=np.flatnonzero(np.isfinite(ds["oxidation_min"].values)))
    samples = sorted(set(timed["sample"].values.tolist()))
    times = sorted(set(timed["oxidation_min"].values.tolist()))
    keep = [n for n in ds.data_vars if ds[n].dtype.kind == "f" and not n.endswith(("_ci",))
            and n.split("_target")[0].split("_truth")[0] in
            ("fraction", "oxidation_degree", "tpb_density", "tpb_length_density", "interface_density",
             "largest_component_share")]
    out_vars: dict[str, Any] = {}
    sizes = {d: ds.sizes[d] for d in ("phase", "pair") if d in ds.sizes}
    n_img = np.zeros((len(samples), len(times)), np.int64)
    trained = np.zeros((len(samples), len(times)), bool)
    for name in keep:
        dims = ds[name].dims[1:]
        out_vars[name] = np.full((len(samples), len(times), *(sizes[d] for d in dims)), np.nan)
    for a, s in enumerate(samples):
        for b, t in enumerate(times):
            sel = np.flatnonzero((timed["sample"].values == s) & (timed["oxidation_min"].values == t))
            n_img[a, b] = len(sel)
            if not len(sel):
                continue
            trained[a, b] = bool(timed["trained"].values[sel].any())
            for name in keep:
                out_vars[name][a, b] = _nanmean(timed[name].values[sel])
    data_vars = {}
    for name in keep:
        dims = ("sample", "oxidation_min", *ds[name].dims[1:])
        attrs = dict(ds[name].attrs)
        attrs["long_name"] = f"mean over images: {attrs.get('long_name', name)}"
        data_vars[name] = (dims, out_vars[name], attrs)
    data_vars["n_images"] = (("sample", "oxidation_min"), n_img, {"units": "1", "long_name": "images"})
    data_vars["trained"] = (("sample", "oxidation_min"), trained,
                            {"long_name": "a training image is among them (not a fair test)"})
    test = ~ds["trained"].values
    for ref in ("target", "truth"):
        other = f"fraction_{ref}"
        if other not in ds:
            continue
        err = 100.0 * (ds["fraction"].values - ds[other].values)  # (image, phase), percentage points
        per_time = np.full((len(samples), len(times), ds.sizes["phase"]), np.nan)
        for a, s in enumerate(samples):
            for b, t in enumerate(times):
                per_time[a, b] = _nanmean(err[(ds["sample"].values == s) & (ds["oxidation_min"].values == t)])
        pp = {"units": "%", "ref": ref}
        data_vars[f"fraction_error_{ref}"] = (("sample", "oxidation_min", "phase"), per_time, {
            **pp, "long_name": f"area fraction minus {ref}, mean over images (percentage points)"})
        e = err[test & np.isfinite(err).all(axis=1)]
        nan = np.full(ds.sizes["phase"], np.nan)
        stats = {"mae": np.abs(e).mean(axis=0), "rmse": np.sqrt((e**2).mean(axis=0)),
                 "bias": e.mean(axis=0)} if len(e) else {"mae": nan, "rmse": nan, "bias": nan}
        for key, value in stats.items():
            data_vars[f"fraction_{key}_{ref}"] = (("phase",), value, {
                **pp, "long_name": f"{key.upper()} of the area fraction vs {ref} over {len(e)} images not used "
                                   "for training (percentage points)", "n_images": len(e)})
    coords = {
        "sample": ("sample", text_values(samples), {"long_name": "sample"}),
        "oxidation_min": ("oxidation_min", np.asarray(times, float), {"units": "min", "long_name": "oxidation time"}),
        **{d: ds[d] for d in ("phase", "pair") if d in ds.coords},
    }
    return xr.Dataset(data_vars, coords=coords, attrs={
        **{k: v for k, v in ds.attrs.items() if not k.startswith("semscale_")},
        "title": f"{ds.attrs.get('title', 'Microstructure statistics')}: per sample and oxidation time",
    })


# --- files: CSV, netCDF, plots ------------------------------------------------------------------------------
def write_tables(ds: Any, *, csv: Path, interfaces_csv: Path) -> None:
    """Tidy CSVs (6 significant digits): ``csv`` one row per image × phase × source, with the image's own
    values repeated; ``interfaces_csv`` one row per image × pair × source."""
    import pandas as pd

    suffixes = [("model" if s == "" else s[1:], s) for s in ("", "_target", "_truth") if f"fraction{s}" in ds]
    per_phase = ("fraction", "phase_area", "pixel_count", "component_count", "largest_component_share")
    per_image = ("labelled_area", "oxidation_degree", "tpb_count", "tpb_density", "tpb_length_density")
    rows, pair_rows = [], []
    for i, image_id in enumerate(ds["image"].values.tolist()):
        head = {"image": image_id, "sample": ds["sample"].values[i], "oxidation_min": ds["oxidation_min"].values[i],
                "role": ds["role"].values[i], "trained": bool(ds["trained"].values[i])}
        for source, sfx in suffixes:
            if not np.isfinite(ds[f"fraction{sfx}"].values[i]).any():
                continue
            img = {n: ds[n + sfx].values[i] for n in per_image}
            img |= {f"{n}_{b}": ds[f"{n}_ci{sfx}"].values[i][j] for n in ("oxidation_degree", "tpb_density")
                    for j, b in enumerate(BOUNDS)}
            for k, phase in enumerate(ds["phase"].values.tolist()):
                row = {**head, "source": source, "phase": phase}
                row |= {n: ds[n + sfx].values[i, k] for n in per_phase}
                row |= {f"fraction_{b}": ds[f"fraction_ci{sfx}"].values[i, k, j] for j, b in enumerate(BOUNDS)}
                row |= {f"d{round(100 * q)}_um": ds[f"size_quantile{sfx}"].values[i, k, m]
                        for m, q in enumerate(ds["quantile"].values.tolist())}
                rows.append(row | img)
            for p, pair in enumerate(ds["pair"].values.tolist()):
                ci = ds[f"interface_density_ci{sfx}"].values[i, p]
                pair_rows.append({**head, "source": source, "pair": pair,
                                  "interface_density_um-1": ds[f"interface_density{sfx}"].values[i, p],
                                  "interface_density_lower": ci[0], "interface_density_upper": ci[1]})
    pd.DataFrame(rows).to_csv(csv, index=False, float_format="%.6g")
    pd.DataFrame(pair_rows).to_csv(interfaces_csv, index=False, float_format="%.6g")


def write_netcdf(ds: Any, summary: Any, path: Path) -> Path:
    """``ds`` (and ``summary`` as group ``summary`` where the engine has groups) as a netCDF file."""
    import importlib.util

    plain = ds.copy()
    plain.attrs = {k: v for k, v in ds.attrs.items() if not k.startswith("semscale_")}
    engine = next((e for e, mod in (("h5netcdf", "h5netcdf"), ("netcdf4", "netCDF4"))
                   if importlib.util.find_spec(mod)), None)
    if engine is None:  # the scipy writer (netCDF-3): no groups, no 64-bit integers, no booleans
        plain = plain.assign_coords(trained=plain["trained"].astype("i1"))
        for name in list(plain.data_vars):
            if plain[name].dtype == np.int64:
                plain[name] = plain[name].astype("i4")
        plain.to_netcdf(path, engine="scipy")
        return path
    plain.to_netcdf(path, engine=engine)
    summary.to_netcdf(path, group="summary", mode="a", engine=engine)
    return path


def update_stats(store: CampaignStore, cfg: StatsConfig = StatsConfig(),  # noqa: B008 - frozen
                 *, model: str | None = None, labels: str | None = None) -> dict[str, Any]:
    """Bring the store's statistics up to date: measure new or changed images, write ``stats/`` and
    ``stats/summary`` (Zarr), ``report/stats.csv``, ``report/interfaces.csv``, ``report/phase_fractions.png``
    (and ``report/stats.nc`` with ``cfg.netcdf``). Nothing is written when nothing changed, or when the store is
    read-only (the numbers are computed and returned all the same). Returns the
    files, the images measured now and the summary's errors against target and truth."""
    previous = store.read_stats()
    ds, measured = campaign_stats(store, cfg, model=model, labels=labels, previous=previous)
    report = store.report_dir()
    files = {"zarr": store.path / store.stats_group, "csv": report / "stats.csv",
             "interfaces_csv": report / "interfaces.csv", "plot": report / "phase_fractions.png"}
    if cfg.netcdf:
        files["netcdf"] = report / "stats.nc"
    unchanged = (previous is not None and not measured
                 and list(previous["image"].values) == list(ds["image"].values)
                 and all(p.exists() for p in files.values()))
    if previous is not None:
        previous.close()
    summary = summarise(ds)
    if unchanged:
        log.info("stats: unchanged (%d images)", ds.sizes["image"])
    elif not store.writable:
        log.warning("stats: %s is read-only; the statistics of %d images (%d measured now) are computed, not "
                    "written", store.path, ds.sizes["image"], len(measured))
    else:
        store.write_stats(ds, summary)
        with writing(files["csv"]) as csv, writing(files["interfaces_csv"]) as interfaces_csv:
            write_tables(ds, csv=csv, interfaces_csv=interfaces_csv)
        from semscale.report.figures import plot_fractions

        with writing(files["plot"]) as png:
            plot_fractions(ds, png)
        if cfg.netcdf:
            with writing(files["netcdf"]) as nc:
                write_netcdf(ds, summary, nc)
        log.info("stats: %d images (%d measured now) -> %s", ds.sizes["image"], len(measured), files["zarr"])
    errors = {name: dict(zip(summary["phase"].values.tolist(), summary[name].values.tolist()))
              for name in summary.data_vars if name.startswith("fraction_") and name.split("_")[1] in
              ("mae", "rmse", "bias")}
    return {"files": {k: str(v) for k, v in files.items()}, "images": ds["image"].values.tolist(),
            "measured": measured, "changed": not unchanged, "written": not unchanged and store.writable,
            "errors": errors}
