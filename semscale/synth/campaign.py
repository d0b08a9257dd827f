"""Simulated images out to disk: a whole campaign as TIFFs + ``campaign.yaml`` (:func:`write_campaign`),
or one image straight into a campaign store (:func:`add_to_store`)."""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.config import IngestConfig
from semscale.errors import ConfigError
from semscale.synth.params import (
    DEFAULT_BIT_DEPTH,
    DEFAULT_EDS_FACTOR,
    DEFAULT_PARAMS,
    DEFAULT_PIXEL_SIZE_UM,
    PHASES,
    SimParams,
)
from semscale.synth.simulate import SynthImage, simulate

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

__all__ = ["add_to_store", "eds_indices", "image_seed", "time_token", "write_campaign"]

_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def time_token(t: float) -> str:
    """Oxidation time as used in image ids: ``5 -> "005"``, ``2.5 -> "2p5"``."""
    return f"{int(t):03d}" if float(t).is_integer() else f"{t:g}".replace(".", "p")


def eds_indices(n_images: int, *, n_eds: int | None) -> set[int]:
    """Indices of the images that get EDS maps: ``n_eds`` spread evenly, first and last included.

    ``None``: about half, at least one, and at least one without EDS when ``n_images >= 2``.
    """
    if n_eds is None:
        n_eds = 1 if n_images == 1 else max(1, min(n_images - 1, (n_images + 1) // 2))
    if not 0 <= n_eds <= n_images:
        raise ConfigError(
            f"Expected 0 <= `n_eds` <= n_images ({n_images}). Got {n_eds!r}; lower `n_eds`."
        )
    if n_eds == 0:
        return set()
    if n_eds == 1:
        return {0}
    pos = np.floor(np.linspace(0, n_images - 1, n_eds) + 0.5).astype(int)
    return {int(p) for p in pos}


def image_seed(seed: int, *, index: int) -> int:
    """Seed of image ``index`` of a campaign simulated with ``seed``."""
    return int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


@dataclass(frozen=True)
class _Planned:
    """One image of a campaign before it is simulated."""

    index: int
    image_id: str
    time: float
    sample: str
    with_eds: bool


def _plan(
    n_images: int, times: Sequence[float], samples: Sequence[str], with_eds: set[int]
) -> list[_Planned]:
    """Time, sample and unique id of every image (see :func:`write_campaign`)."""
    plan: list[_Planned] = []
    seen: dict[str, int] = {}
    for k in range(n_images):
        t = float(times[k % len(times)])
        sample = str(samples[(k // len(times)) % len(samples)])
        base = f"t{time_token(t)}_{_ID_BAD.sub('-', sample.lower())}"
        seen[base] = seen.get(base, 0) + 1
        image_id = base if seen[base] == 1 else f"{base}_{seen[base]}"
        plan.append(_Planned(k, image_id, t, sample, k in with_eds))
    return plan


def _write_files(out: pathlib.Path, item: _Planned, im: SynthImage, seed: int) -> dict[str, Any]:
    """Write the TIFFs and the meta JSON of one image; return its ``campaign.yaml`` entry."""
    import tifffile

    image_id = item.image_id
    rel = {"sem": f"data/{image_id}_sem.tif", "truth": f"data/{image_id}_truth.tif"}
    tifffile.imwrite(out / rel["sem"], im.sem, photometric="minisblack")
    tifffile.imwrite(out / rel["truth"], im.truth, photometric="minisblack")
    eds_rel = {}
    for el, arr in im.eds.items():
        eds_rel[el] = f"data/{image_id}_{el}.tif"
        tifffile.imwrite(out / eds_rel[el], arr, photometric="minisblack")
    meta = {**im.meta, "id": image_id, "sample": item.sample, "campaign_seed": int(seed),
            "index": item.index}
    (out / "data" / f"{image_id}_meta.json").write_text(json.dumps(meta, indent=1))
    t = item.time
    entry: dict[str, Any] = {
        "id": image_id,
        "sem": rel["sem"],
        "sample": item.sample,
        "oxidation_min": int(t) if t.is_integer() else t,
    }
    if eds_rel:
        entry["eds"] = eds_rel
    entry["truth"] = rel["truth"]
    entry["role"] = "train" if eds_rel else "predict"
    return entry


def write_campaign(
    out_dir: str | pathlib.Path,
    *,
    n_images: int = 3,
    shape: tuple[int, int] = (1024, 1024),
    times: Sequence[float] = (0, 2, 5, 10, 20, 30, 120),
    seed: int = 0,
    n_eds: int | None = None,
    name: str = "synthetic-oxidation",
    samples: Sequence[str] = ("A",),
    pixel_size_um: float = DEFAULT_PIXEL_SIZE_UM,
    eds_factor: int = DEFAULT_EDS_FACTOR,
    bit_depth: int = DEFAULT_BIT_DEPTH,
    params: SimParams = DEFAULT_PARAMS,
) -> pathlib.Path:
    """Simulate an oxidation campaign and write it as TIFFs plus a ``campaign.yaml``.

    Image ``k`` has time ``times[k % len(times)]`` and sample ``samples[(k // len(times)) %
    len(samples)]``, id ``t{time:03d}_{sample.lower()}`` (``_2``, ``_3``... appended when repeated) and
    its own seed derived from ``seed`` and ``k`` (:func:`image_seed`). ``n_eds`` images (default: about
    half, at least one, and at least one without EDS when ``n_images >= 2``), spread evenly over the
    list (first and last included), get EDS maps and ``role: train``; the others ``role: predict``.
    ``params`` are the simulator's physical constants (:class:`SimParams`).

    Files, under ``out_dir``: ``data/<id>_sem.tif``, ``data/<id>_{Ni,O,Zr}.tif`` (EDS images only),
    ``data/<id>_truth.tif`` (every image), ``data/<id>_meta.json`` (the :func:`simulate` metadata,
    incl. the true ``eds_shift_px``) and ``campaign.yaml`` (paths relative to it; store
    ``campaign.zarr``).

    Returns:
        Path of the written ``campaign.yaml``.
    """
    import yaml

    if n_images < 1:
        raise ConfigError(f"Expected n_images >= 1 for `n_images`. Got {n_images!r}.")
    if not times:
        raise ConfigError("Expected at least one time for `times`. Got none; give e.g. (0, 30, 120).")
    if not samples:
        raise ConfigError("Expected at least one sample name for `samples`. Got none; give e.g. ('A',).")
    out = pathlib.Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    entries = []
    for item in _plan(n_images, times, samples, eds_indices(n_images, n_eds=n_eds)):
        im = simulate(shape, oxidation_min=item.time, seed=image_seed(seed, index=item.index),
                      pixel_size_um=pixel_size_um, eds_factor=eds_factor, with_eds=item.with_eds,
                      bit_depth=bit_depth, params=params)
        entries.append(_write_files(out, item, im, seed))
    config = {"name": name, "store": "campaign.zarr", "pixel_size_um": float(pixel_size_um),
              "classes": list(PHASES), "images": entries}
    path = out / "campaign.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def add_to_store(
    store: CampaignStore,
    image_id: str,
    sim: SynthImage,
    *,
    chunks: int = IngestConfig.chunk_size,
    eds_chunks: int | None = None,
    **image_attrs: Any,
) -> None:
    """Put one simulated image into a campaign store as ingest would: the SEM (normalisation from its
    full histogram, pyramid), ``labels/truth`` and, if simulated, the EDS maps (attrs record the simulated
    misregistration). ``chunks`` is the SEM/label chunk edge (px; default the ingest config's),
    ``eds_chunks`` the EDS one (``None``: the store's default). ``image_attrs`` (e.g. ``role``,
    ``sample``) go to the image's attrs with its ``oxidation_min``."""
    from semscale.kernels.norm import histogram, norm_from_histogram

    arr = store.create_image(image_id, shape=sim.sem.shape, dtype=sim.sem.dtype, chunks=chunks)
    arr[:] = sim.sem
    nbins = int(np.iinfo(sim.sem.dtype).max) + 1
    store.finish_image(image_id, norm=norm_from_histogram(histogram(sim.sem, nbins=nbins)),
                       oxidation_min=sim.meta.get("oxidation_min"), **image_attrs)
    store.write_labels(image_id, "truth", sim.truth)
    if sim.eds:
        attrs = {"simulated_shift_px": list(sim.meta["eds_shift_px"])}
        if eds_chunks is None:
            store.write_eds(image_id, sim.eds, factor=sim.eds_factor, attrs=attrs)
        else:
            store.write_eds(image_id, sim.eds, factor=sim.eds_factor, chunks=eds_chunks, attrs=attrs)
