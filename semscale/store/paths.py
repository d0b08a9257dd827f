"""Every path inside a campaign store, formatted in one place.

Zarr keys are ``/``-separated and relative to the store root; :mod:`semscale.store` is the only code that
uses them, so the layout in ``docs/architecture.md`` can change here without touching any stage.
"""

from __future__ import annotations

from semscale.store.ngff import level_path

__all__ = [
    "EDS", "IMAGES", "LOCK", "MODELS", "PREDICTIONS", "REPORT", "ROBUSTNESS", "SCRATCH", "STATS", "STATS_SUMMARY",
    "eds", "image", "label", "label_level", "labels", "member_file", "model", "prediction", "robustness", "scratch",
    "sem_level",
]

IMAGES = "images"
EDS = "eds"
MODELS = "models"
PREDICTIONS = "predictions"
STATS = "stats"
STATS_SUMMARY = "stats/summary"
REPORT = "report"
ROBUSTNESS = "robustness"
"""``robustness/<model>``: the robustness sweep of a model (an xarray Dataset)."""
LOCK = ".semscale-lock.json"
"""The writer lock file at the store's root (:mod:`semscale.store.lock`); present only while a run writes."""
SCRATCH = "scratch"
"""Intermediate results of unfinished stages (per-block resume); dropped once a stage completes."""

MEMBER_FILES = {
    "model": "member_{k}.keras",
    "sidecar": "member_{k}.json",
    "history": "history/member_{k}.json",
    "last": "checkpoints/member_{k}_last.keras",
    "best": "checkpoints/member_{k}_best.weights.h5",
    "state": "checkpoints/member_{k}_state.json",
}
"""Files of ensemble member ``k`` below ``models/<name>/`` (exported model, sidecar, training state)."""


def image(image_id: str) -> str:
    return f"{IMAGES}/{image_id}"


def sem_level(image_id: str, level: int = 0) -> str:
    return f"{IMAGES}/{image_id}/{level_path(level)}"


def labels(image_id: str) -> str:
    return f"{IMAGES}/{image_id}/labels"


def label(image_id: str, name: str) -> str:
    return f"{IMAGES}/{image_id}/labels/{name}"


def label_level(image_id: str, name: str, level: int = 0) -> str:
    return f"{IMAGES}/{image_id}/labels/{name}/{level_path(level)}"


def eds(image_id: str) -> str:
    return f"{EDS}/{image_id}"


def model(name: str) -> str:
    return f"{MODELS}/{name}"


def member_file(name: str, k: int, kind: str = "model") -> str:
    return f"{MODELS}/{name}/" + MEMBER_FILES[kind].format(k=k)


def prediction(model_name: str, image_id: str) -> str:
    return f"{PREDICTIONS}/{model_name}/{image_id}"


def scratch(stage: str, image_id: str) -> str:
    return f"{SCRATCH}/{stage}/{image_id}"


def robustness(model: str) -> str:
    return f"{ROBUSTNESS}/{model}"
