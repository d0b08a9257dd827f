"""The report's figures: numpy arrays and xarray Datasets in, one PNG file out per function (matplotlib,
Agg). Every figure uses the store's phase palette (:data:`semscale.store.ngff.PHASE_COLORS`), the same
colours napari shows for the NGFF label images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semscale import IGNORE_LABEL
from semscale.config.sections import PERTURBATIONS

__all__ = ["label_rgb", "phase_rgb", "plot_confusions", "plot_densities", "plot_fractions", "plot_overlay",
           "plot_robustness", "plot_violins"]

STYLES = (("", "o-", "U-Net"), ("_target", "s:", "target"), ("_truth", "x--", "truth"))
"""Label sources of the statistics Dataset: variable suffix, line style, legend name."""

PERTURBATION_AXES = {"blur_sigma": "blur σ [px]", "brightness": "brightness factor",
                     "noise_sigma": "noise σ (Gaussian part; Poisson C = photons)",
                     "magnification": "magnification ratio"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def phase_rgb(phase: str) -> np.ndarray:
    """The RGB colour (0..1) of ``phase`` in the store's palette (grey for an unknown phase)."""
    from semscale.store.ngff import PHASE_COLORS

    return np.array(PHASE_COLORS.get(str(phase), (128, 128, 128, 255))[:3]) / 255.0


def label_rgb(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """An RGB image (float, 0..1) of a label image in the palette; unlabelled pixels (255) white."""
    lut = np.ones((256, 3))
    for k, name in enumerate(classes):
        lut[k] = phase_rgb(name)
    return lut[np.asarray(labels, np.uint8)]


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    plt = _pyplot()
    path = Path(path)
    fig.savefig(path, dpi=dpi, metadata={"Software": None})  # no timestamp: same figure, same bytes
    plt.close(fig)
    return path


def plot_confusions(results: Sequence[tuple[str, Mapping[str, Any]]], path: str | Path, *, dpi: int = 110) -> Path:
    """Row-normalised confusion matrices (colour and %), with the pixel counts, one panel per ``(title,
    score result)``; the result is :func:`semscale.analysis.metrics.score`'s."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(1, len(results)), figsize=(4.6 * max(1, len(results)), 4.2), squeeze=False)
    for ax, (title, result) in zip(axes[0], results):
        names = list(result["classes"])
        cm = np.asarray(result["confusion"], np.int64)
        rows = cm.sum(axis=1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{norm[i, j]:.1%}\n{cm[i, j]:,}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"{title}\naccuracy {result['accuracy']:.2%}, mean IoU {result['mean_iou']:.2%}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _scale_bar(ax: Any, width_px: int, pixel_size_um: float) -> None:
    """A white bar of a round length near a fifth of the panel, labelled in µm."""
    target = width_px * pixel_size_um / 5
    length = float(10 ** np.floor(np.log10(target)))
    for m in (5, 2):
        if m * length <= target:
            length *= m
            break
    px = length / pixel_size_um
    y, x0 = 0.93, 0.04
    ax.plot([x0 * width_px, x0 * width_px + px], [y * width_px] * 2, color="white", lw=3,
            solid_capstyle="butt")
    ax.text(x0 * width_px + px / 2, (y - 0.025) * width_px, f"{length:g} µm", color="white", ha="center",
            va="bottom", fontsize=7, fontweight="bold")


def plot_overlay(*, sem: np.ndarray, panels: Sequence[tuple[str, np.ndarray | None]], classes: Sequence[str],
                 pixel_size_um: float, title: str, path: str | Path, dpi: int = 110) -> Path:
    """One row: the SEM crop, then each ``(name, array)`` panel — label images (uint8) in the palette,
    ``difference`` (bool: prediction ≠ reference) in red over the SEM, float maps (confidence, uncertainty)
    with a colour bar. A ``None`` array draws "not available". Every panel gets a µm scale bar."""
    plt = _pyplot()
    n = 1 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), squeeze=False)
    grey = np.asarray(sem, np.float64)
    lo, hi = np.percentile(grey, (0.5, 99.5)) if grey.size else (0.0, 1.0)
    grey = np.clip((grey - lo) / max(hi - lo, 1e-9), 0, 1)
    axes[0, 0].imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0, 0].set_title("SEM", fontsize=8)
    for ax, (name, arr) in zip(axes[0, 1:], panels):
        ax.set_title(name, fontsize=8)
        if arr is None:
            ax.imshow(np.ones_like(grey), cmap="gray", vmin=0, vmax=1)
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        elif arr.dtype == bool:
            rgb = np.repeat(grey[..., None], 3, axis=2) * 0.6
            rgb[arr] = (1.0, 0.1, 0.1)
            ax.imshow(rgb, interpolation="nearest")
            ax.set_title(f"{name} ({arr.mean():.1%} of pixels)", fontsize=8)
        elif arr.dtype == np.uint8:
            ax.imshow(label_rgb(arr, classes), interpolation="nearest")
        else:
            im = ax.imshow(arr.astype(np.float32), cmap="magma" if "uncert" in name else "viridis",
                           interpolation="nearest")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
        _scale_bar(ax, grey.shape[1], pixel_size_um)
    handles = [plt.Rectangle((0, 0), 1, 1, color=phase_rgb(c)) for c in classes]
    fig.legend(handles, list(classes), loc="lower center", ncol=len(classes), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, path, dpi)


def plot_violins(samples: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, *, dpi: int = 110) -> Path:
    """Grey-level distributions per phase, one violin per label source side by side:
    ``samples[phase][source]`` holds the SEM grey values of pixels that ``source`` labels ``phase``."""
    plt = _pyplot()
    phases = list(samples)
    sources = sorted({s for v in samples.values() for s in v}, key=lambda s: (s != "prediction", s))
    fig, ax = plt.subplots(figsize=(1.9 * max(1, len(phases)) + 1.5, 3.6))
    width = 0.8 / max(1, len(sources))
    for k, phase in enumerate(phases):
        for j, source in enumerate(sources):
            values = np.asarray(samples[phase].get(source, ()), np.float64)
            if values.size < 2:
                continue
            pos = k + (j - (len(sources) - 1) / 2) * width
            parts = ax.violinplot(values, positions=[pos], widths=width * 0.95, showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor(phase_rgb(phase))
                body.set_alpha(0.85 if j == 0 else 0.4)
                body.set_edgecolor("black" if j == 0 else "grey")
    ax.set_xticks(range(len(phases)), [f"{p}\n({' | '.join(sources)})" for p in phases], fontsize=7)
    ax.set_ylabel("SEM grey value")
    ax.set_title("Grey level per phase: pixels the U-Net labels so (solid) vs the targets (light)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _time_axis(ax: Any, t: np.ndarray) -> None:
    pos = t[np.isfinite(t) & (t > 0)]
    if len(pos) and np.nanmax(t) > 20 * pos.min():
        ax.set_xscale("symlog", linthresh=max(1.0, float(pos.min())))
    ax.set_xlabel("oxidation time [min]")
    ax.grid(alpha=0.3)


def _over_time(ax: Any, ds: Any, name: str, color: Any, label: str, index: tuple[Any, ...] = ()) -> None:
    """``name`` (and its ``_ci`` interval) of each label source over oxidation time; training images hollow
    white dots on the primary source."""
    order = np.argsort(ds["oxidation_min"].values, kind="stable")
    t = ds["oxidation_min"].values[order]
    trained = ds["trained"].values[order]
    for sfx, style, what in STYLES:
        if f"{name}{sfx}" not in ds:
            continue
        y = ds[f"{name}{sfx}"].values[(order, *index)]
        ax.plot(t, y, style, color=color, alpha=1.0 if sfx == "" else 0.6, label=f"{label} ({what})",
                markerfacecolor="none" if sfx else color)
        if sfx == "" and f"{name}_ci" in ds:
            ci = ds[f"{name}_ci"].values[(order, *index)]
            ax.errorbar(t, y, yerr=np.abs(ci.T - y), fmt="none", ecolor=color, capsize=2, alpha=0.8)
            ax.plot(t[trained], y[trained], "o", color="white", markersize=3, zorder=5)


def plot_fractions(ds: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Phase fractions (with intervals) and the oxidation degree over oxidation time: the primary labels,
    the targets and truth where present; training images marked with a white dot."""
    plt = _pyplot()
    t = ds["oxidation_min"].values
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    for k, phase in enumerate(ds["phase"].values.tolist()):
        _over_time(ax, ds, "fraction", phase_rgb(str(phase)), str(phase), (k,))
    _time_axis(ax, t)
    ax.set_ylabel("area fraction")
    ax.legend(fontsize=6, ncol=3)
    ax.set_title("Phase fractions (white dot: training image)", fontsize=9)
    _over_time(ax2, ds, "oxidation_degree", "k", "oxidation degree")
    _time_axis(ax2, t)
    ax2.set_ylabel("NiO / (NiO + Ni) area")
    ax2.legend(fontsize=7)
    ax2.set_title("Oxidation degree", fontsize=9)
    fig.suptitle(f"{ds.attrs.get('source', '')}", fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_densities(ds: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Active triple-phase-boundary density and the interface densities of every phase pair over oxidation
    time (primary labels with intervals; targets and truth where present)."""
    plt = _pyplot()
    t = ds["oxidation_min"].values
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    _over_time(ax, ds, "tpb_density", "k", "TPB")
    _time_axis(ax, t)
    ax.set_ylabel("active TPB density [µm⁻²]")
    ax.legend(fontsize=7)
    ax.set_title("Active triple-phase boundary (Ni | YSZ | pore)", fontsize=9)
    cmap = plt.get_cmap("tab10")
    for k, pair in enumerate(ds["pair"].values.tolist()):
        _over_time(ax2, ds, "interface_density", cmap(k % 10), str(pair), (k,))
    _time_axis(ax2, t)
    ax2.set_ylabel("interface length per area [µm⁻¹]")
    ax2.legend(fontsize=5, ncol=2)
    ax2.set_title("Interface densities (Crofton, 4 directions)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_robustness(ds: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """Accuracy (mean ± std over images) against each perturbation's strength, one panel each."""
    plt = _pyplot()
    kinds = [k for k in PERTURBATIONS if (ds["perturbation"].values == k).any()]
    fig, axes = plt.subplots(1, max(1, len(kinds)), figsize=(3.3 * max(1, len(kinds)), 3.2), squeeze=False,
                             sharey=True)
    refs = sorted(set(ds["reference"].values.tolist()))
    for ax, kind in zip(axes[0], kinds):
        sel = ds["perturbation"].values == kind
        x = ds["value"].values[sel]
        acc = ds["accuracy"].values[sel]
        mean, std = np.nanmean(acc, axis=1), np.nanstd(acc, axis=1)
        ax.errorbar(x, mean * 100, yerr=std * 100, fmt="o-", color="k", capsize=3)
        ax.fill_between(x, (mean - std) * 100, (mean + std) * 100, color="k", alpha=0.1)
        ax.set_xlabel(PERTURBATION_AXES[kind], fontsize=8)
        if kind == "magnification":
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"accuracy vs {' / '.join(refs)} [%]")
    fig.suptitle(f"Robustness of {ds.attrs.get('model', 'the model')} (mean ± std over "
                 f"{ds.sizes['image']} images)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi)


def violin_samples(*, sem: np.ndarray, sources: Mapping[str, np.ndarray], classes: Sequence[str], n: int,
                   seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Up to ``n`` grey values per phase and label source (a fixed-seed sample; unlabelled pixels left out)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {c: {} for c in classes}
    flat = np.asarray(sem).ravel()
    for source, labels in sources.items():
        lab = np.asarray(labels).ravel()
        for k, c in enumerate(classes):
            idx = np.flatnonzero((lab == k) & (lab != IGNORE_LABEL))
            if idx.size > n:
                idx = rng.choice(idx, n, replace=False)
            out[c][source] = flat[idx]
    return out
