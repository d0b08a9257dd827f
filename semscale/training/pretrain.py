"""Synthetic pretraining: a U-Net trained on exact truth of domain-randomised simulated images.

The simulator gives unlimited images with pixel-exact labels. :func:`pretrain_synthetic` simulates
``n_images`` images, each with its own randomised setting (:func:`semscale.synth.randomise.random_params`,
which never draws an evaluation-only setting) and oxidation time, puts them in a campaign store with their
``truth`` labels and trains one member on that truth with :func:`semscale.training.fit.train_member`. The
exported member (``.keras`` + sidecar) is what ``training.init_weights`` starts a campaign's training from;
the package ships the one made by ``scripts/pretrain_synthetic.py`` (:data:`SHIPPED`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from semscale.config import TrainingConfig
from semscale.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

__all__ = ["SHIPPED", "init_weights_path", "load_init_weights", "pretrain_synthetic"]

SHIPPED: dict[str, str] = {"synthetic": "synthetic-cpu.keras"}
"""Names ``training.init_weights`` accepts for weights shipped in ``semscale/weights/``."""


def init_weights_path(name: str) -> Path:
    """The file of ``training.init_weights``: a shipped name of :data:`SHIPPED` or a ``.keras`` path."""
    if name in SHIPPED:
        path = Path(__file__).resolve().parent.parent / "weights" / SHIPPED[name]
    else:
        path = Path(name).expanduser()
    if path.suffix != ".keras" or not path.is_file():
        raise ConfigError(
            f"Expected `training.init_weights` to be one of {', '.join(map(repr, SHIPPED))} or an existing "
            f"`.keras` model file (a member exported by semscale). Got {name!r} ({path} "
            + ("is not a .keras file)." if path.suffix != ".keras" else "does not exist).")
        )
    return path


def load_init_weights(model: Any, name: str) -> Path:
    """Copy the weights of ``training.init_weights`` into ``model`` (same architecture); return the file."""
    from semscale.training.unet import load_model, unet_filters

    path = init_weights_path(name)
    source, _meta = load_model(path)
    want, got = list(unet_filters(model)[0]), list(unet_filters(source)[0])
    if want != got or len(model.weights) != len(source.weights):
        raise ModelError(
            f"Expected the initial weights {path} to have the architecture being trained (filters {want}). "
            f"Got filters {got}; set `training.filters` to {got} or train without `init_weights`."
        )
    model.set_weights(source.get_weights())
    return path


def pretrain_synthetic(out: Path, cfg: TrainingConfig, *, workdir: Path, n_images: int, size: int,
                       seed: int) -> dict[str, Any]:
    """Simulate the randomised images in ``workdir``, train member 0 of ``cfg`` on their truth and copy it
    to ``out`` (``.keras`` + ``.json`` sidecar with the pretraining recorded); return the sidecar."""
    from semscale.store.models import sidecar_path
    from semscale.synth.randomise import BASE_JITTER, MAX_TIME_MIN, RANGES, SCALED
    from semscale.training.fit import train_member
    from semscale.training.synthetic import write_synthetic_store

    if out.suffix != ".keras":
        raise ConfigError(f"Expected a `.keras` output file. Got {out}.")
    store = write_synthetic_store(workdir / "synthetic.zarr", n_images=n_images, size=size, seed=seed)
    # every window is simulated already: no second source of simulated windows (the cpu recipe mixes them in),
    # and the weights a campaign starts from carry no class offsets (its own member gets fitted ones)
    cfg = dataclasses.replace(cfg, label_source="truth", ignore_boundary_px=0.0, init_weights=None,
                              synthetic_fraction=0.0, class_offsets="none")
    side = train_member(store, cfg, member=0)
    model_file = store.member_file(cfg.name, 0, "model")
    side["pretraining"] = {
        "images": n_images, "size_px": size, "seed": seed, "labels": "exact simulator truth",
        "randomised": {"ranges": RANGES, "base_jitter": BASE_JITTER, "scaled": SCALED,
                       "max_time_min": MAX_TIME_MIN},
    }
    side = json.loads(json.dumps(side))
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, out)
    sidecar_path(out).write_text(json.dumps(side, indent=1, sort_keys=True) + "\n")
    log.info("pretrained weights: %s (best epoch %s, val accuracy %.4f)", out, side.get("best_epoch"),
             side.get("val_accuracy") or float("nan"))
    return side
