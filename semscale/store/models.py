"""Trained models in the store: member files, their JSON sidecars, and the listing behind ``semscale models``.

Member ``k`` of model ``<name>`` is a set of files below ``models/<name>/`` (names in
:data:`semscale.store.paths.MEMBER_FILES`): the exported ``member_k.keras`` with its sidecar
``member_k.json``, the per-epoch history and the training checkpoints. Nothing here imports Keras.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semscale.errors import ModelError
from semscale.store import paths
from semscale.store.layout import CampaignStore
from semscale.store.location import StorePath, store_path

log = logging.getLogger(__name__)

__all__ = [
    "MEMBER_KINDS", "format_models", "list_models", "member_file_name", "member_indices", "member_paths", "read_sidecar",
    "sidecar_path",
]

MEMBER_KINDS = tuple(paths.MEMBER_FILES)
"""The files of one member: ``model``, ``sidecar``, ``history``, ``last``, ``best``, ``state``."""

_REQUIRED_SIDECAR_KEYS = ("classes", "filters", "receptive_field_px", "halo_px", "multiple")


# --- member files ----------------------------------------------------------------------------------
def member_paths(store: CampaignStore, name: str, member: int) -> dict[str, StorePath]:
    """Where member ``member`` of model ``name`` and its training files live (creates the model group)."""
    store.model_dir(name, create=True)
    return {kind: store.member_file(name, member, kind) for kind in MEMBER_KINDS}


def member_file_name(member: int, kind: str) -> str:
    """File ``kind`` of member ``member`` relative to its model's folder (e.g. ``history/member_0.json``)."""
    return paths.MEMBER_FILES[kind].format(k=member)


def member_indices(store: CampaignStore, name: str, kind: str = "model") -> list[int]:
    """The members ``k`` (sorted) of model ``name`` that have a file ``kind`` (temporary files excluded)."""
    template = paths.MEMBER_FILES[kind]
    pattern = re.compile(re.escape(Path(template).name).replace(re.escape("{k}"), r"(\d+)") + "$")
    folder = store.model_dir(name) / Path(template).parent
    if not folder.is_dir():
        return []
    found = (pattern.match(f.name) for f in folder.glob(Path(template).name.format(k="*")))
    return sorted(int(m.group(1)) for m in found if m)


def sidecar_path(model_path: str | StorePath) -> StorePath:
    """The JSON sidecar next to a ``.keras`` model file."""
    return store_path(model_path).with_suffix(".json")


def read_sidecar(path: str | StorePath) -> dict[str, Any]:
    """The validated JSON sidecar of model file ``path`` (a local path or one in a store)."""
    path = store_path(path)
    if not path.is_file():
        raise ModelError(f"Expected a model file at `{path}`. Got nothing there; train one or fix the path.")
    side = sidecar_path(path)
    if not side.is_file():
        raise ModelError(
            f"Expected the sidecar {side.name} next to model {path}. Got none; save models with "
            "semscale.training.unet.save_model."
        )
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"Expected valid JSON in sidecar {side}. Got a parse error: {exc}.") from None
    missing = [k for k in _REQUIRED_SIDECAR_KEYS if k not in meta]
    if missing:
        raise ModelError(f"Expected keys {missing} in sidecar {side}. Got only {sorted(meta)}; re-save the model.")
    if len(meta["classes"]) != int(meta.get("n_classes", len(meta["classes"]))):
        raise ModelError(f"Sidecar {side}: `classes` ({meta['classes']}) does not match `n_classes`.")
    return dict(meta)


# --- listing ---------------------------------------------------------------------------------------
def _member_rows(store: CampaignStore, name: str) -> list[dict[str, Any]]:
    """One row per exported member of model ``name`` (with its whole sidecar under ``sidecar``)."""
    rows: list[dict[str, Any]] = []
    for k in member_indices(store, name, "model"):
        f = store.member_file(name, k, "model")
        try:
            side = read_sidecar(f)
        except ModelError as exc:
            log.warning("skipping %s: %s", f, exc)
            continue
        rows.append({
            "member": int(side.get("member", k)),  # the sidecar's own number wins
            "path": str(f),
            "val_accuracy": side.get("val_accuracy"),
            "val_mean_iou": side.get("val_mean_iou"),
            "best_epoch": side.get("best_epoch"),
            "epochs_trained": side.get("epochs_trained"),
            "stopped": side.get("stopped"),
            "train_minutes": side.get("training", {}).get("train_minutes"),
            "seed": side.get("member_seed", side.get("seed")),
            "sidecar": side,
        })
    rows.sort(key=lambda m: int(m["member"]))
    return rows


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    vals = [m[key] for m in rows if isinstance(m.get(key), int | float)]
    return float(np.mean(vals)) if vals else None


def list_models(store: CampaignStore) -> list[dict[str, Any]]:
    """The store's models with their members and metrics (for ``semscale models STORE``).

    One dict per model: ``name``, ``n_members``, mean ``val_accuracy`` / ``val_mean_iou`` over members,
    ``patch_size``, ``label_source``, ``filters``, ``train_images``, ``in_progress`` (members with a
    checkpoint but no exported model yet) and ``members`` (one dict each: ``member``, ``path``,
    ``val_accuracy``, ``val_mean_iou``, ``best_epoch``, ``epochs_trained``, ``stopped`` (why training ended
    early: ``budget``, ``patience``, or None), ``train_minutes``, ``seed``).
    """
    out = []
    for name in store.model_names():
        rows = _member_rows(store, name)
        done = {m["member"] for m in rows}
        first: dict[str, Any] = rows[0]["sidecar"] if rows else {}
        out.append({
            "name": name,
            "n_members": len(rows),
            "val_accuracy": _mean(rows, "val_accuracy"),
            "val_mean_iou": _mean(rows, "val_mean_iou"),
            "patch_size": first.get("patch_size"),
            "label_source": first.get("label_source"),
            "filters": first.get("filters"),
            "train_images": first.get("split", {}).get("train_images"),
            "in_progress": [k for k in member_indices(store, name, "state") if k not in done],
            "members": [{k: v for k, v in m.items() if k != "sidecar"} for m in rows],
        })
    return out


def format_models(models: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of :func:`list_models` output (one line per member, a summary per model)."""
    if not models:
        return "no models"

    def f(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = [f"{'model':<16} {'member':>6} {'val acc':>8} {'val mIoU':>8} {'best ep':>7} {'epochs':>6}"]
    for m in models:
        for mem in m["members"]:
            lines.append(f"{m['name']:<16} {mem['member']:>6} {f(mem['val_accuracy']):>8} "
                         f"{f(mem['val_mean_iou']):>8} {f(mem['best_epoch']):>7} {f(mem['epochs_trained']):>6}")
        extra = f"  (in progress: {m['in_progress']})" if m["in_progress"] else ""
        lines.append(f"{m['name']:<16} {'mean':>6} {f(m['val_accuracy']):>8} {f(m['val_mean_iou']):>8}"
                     f"   {m['n_members']} member(s), patch {f(m['patch_size'])}, labels "
                     f"{f(m['label_source'])}{extra}")
    return "\n".join(lines)
