"""Models as inference tasks see them: references (path + hash), their facts, and the geometry they imply.

Models travel to tasks as :class:`ModelRef` (path + sha256, never the model itself) and load once per worker
process (:func:`semscale.training.unet.get_cached_model`). A model is given by its name in a store
(``store.model_members(name)``) or by ``.keras`` paths (with sidecars); tests may pass callables
``(n, h, w, 1) → (n, h, w, K)`` with optional attributes ``multiple``, ``halo_px`` and ``patch_size``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.config import InferenceConfig
from semscale.errors import ConfigError, ModelError
from semscale.kernels.blending import PredictFn
from semscale.kernels.windows import Geometry, align_up
from semscale.store.location import PATH_TYPES, StorePath, store_path

if TYPE_CHECKING:
    from semscale.store.layout import CampaignStore

__all__ = [
    "Member",
    "ModelFacts",
    "ModelRef",
    "Models",
    "as_list",
    "input_norm",
    "make_geometry",
    "member_fns",
    "resolve_members",
    "store_models",
]


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A saved model as shipped to tasks: its path and content hash (never the model itself)."""

    path: str
    sha256: str


Member = ModelRef | PredictFn
"""One ensemble member as a task holds it."""
Models = str | StorePath | ModelRef | PredictFn | Sequence[str | StorePath | ModelRef | PredictFn]
"""What :func:`resolve_members` accepts: one model or a sequence (an ensemble)."""


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the geometry and the outputs need to know of an ensemble (from sidecars or fake nets)."""

    n_classes: int
    classes: tuple[str, ...] | None
    multiple: int
    """Least common multiple of the members' pooling factors (px)."""
    halo_px: int
    """Largest one-sided receptive-field extent of the members (px)."""
    patch_size: int | None
    """The first member's training patch size (px), if known."""
    normalisation: str = "image"
    """``image`` (the stored per-image percentiles) or ``patch-l2`` (each window on its own, raw input)."""
    input_size: int | None = None
    """The fixed input edge (px) of networks that take only one size (imported models), else None."""
    samples: int = 1
    """Probability maps the ensemble yields per pixel: one per member, or its Monte-Carlo dropout passes."""


def reduced_halo(cfg: InferenceConfig, facts: ModelFacts) -> bool:
    """Whether ``cfg.halo`` gives tiles less context than the receptive field (then output depends on where
    tiles are cut, and blocks must lie on the tile grid); a larger setting is the exact halo."""
    return cfg.mode == "tile" and cfg.halo is not None and cfg.halo < facts.halo_px


def make_geometry(cfg: InferenceConfig, facts: ModelFacts) -> Geometry:
    """The one place a :class:`Geometry` is built: settings from ``cfg``, network facts from ``facts``.

    ``patch_size`` defaults to the model's (sidecar) and ``stride`` to the patch size; the halo is the
    receptive field's one-sided extent (or a smaller ``cfg.halo``) rounded up to the network's multiple.
    Networks that normalise each window (``patch-l2``) or take one input size only run in the window modes, at that size."""
    patch = cfg.patch_size if cfg.patch_size is not None else facts.patch_size
    stride = cfg.stride if cfg.stride is not None else patch
    if cfg.mode == "tile" and (facts.normalisation == "patch-l2" or facts.input_size is not None):
        why = "normalises each window on its own" if facts.normalisation == "patch-l2" else \
            f"takes {facts.input_size}² px inputs only"
        raise ConfigError(f"Expected `inference.mode` average or gaussian for this model: it {why}. Got mode "
                          "'tile'; pass --mode average (the published procedure) or --mode gaussian.")
    if facts.input_size is not None and patch != facts.input_size:
        raise ConfigError(f"Expected `inference.patch_size` {facts.input_size} (the model's fixed input). Got "
                          f"{patch}; leave it unset.")
    return Geometry(
        mode=cfg.mode, patch_size=patch, stride=stride,
        halo=align_up(cfg.halo if cfg.halo is not None and reduced_halo(cfg, facts) else facts.halo_px,
                      facts.multiple),
        multiple=facts.multiple, tile_size=cfg.tile_size, sigma_fraction=cfg.sigma_fraction, tta=cfg.tta,
        batch_size=cfg.batch_size,
    )


def store_models(
    store: CampaignStore, models: str | Sequence[str | StorePath], *, model_name: str | None, cfg: InferenceConfig
) -> tuple[list[StorePath], str]:
    """``(member paths, name to write predictions under)`` for ``models``: a model name in ``store`` or
    ``.keras`` paths (then named ``model_name``, else ``cfg.model``)."""
    if isinstance(models, str):
        return store.model_members(models), model_name or models
    name = model_name or cfg.model
    if not name:
        raise ConfigError(
            "Expected `model_name` (or `inference.model`) to name predictions of model files. Got none; pass "
            "model_name=..., or give the model by its name in the store."
        )
    return [store_path(p) for p in models], name


def _file_facts(member: str | StorePath | ModelRef) -> tuple[ModelRef, ModelFacts]:
    from semscale.inference.published import normalisation_of
    from semscale.training.unet import content_hash, read_sidecar

    path = store_path(member.path if isinstance(member, ModelRef) else member)
    meta = read_sidecar(path)
    ref = ModelRef(str(path), member.sha256 if isinstance(member, ModelRef) else content_hash(path))
    patch, fixed = meta.get("patch_size"), meta.get("input_size")
    return ref, ModelFacts(
        n_classes=len(meta["classes"]), classes=tuple(meta["classes"]), multiple=int(meta["multiple"]),
        halo_px=int(meta["halo_px"]), patch_size=int(patch) if patch is not None else None,
        normalisation=normalisation_of(meta), input_size=int(fixed) if fixed is not None else None,
        samples=max(1, int((meta.get("dropout_inference") or {}).get("passes", 0))),
    )


def _fn_facts(fn: PredictFn) -> ModelFacts:
    multiple = int(getattr(fn, "multiple", 1))
    probe = np.asarray(fn(np.zeros((1, multiple, multiple, 1), np.float32)))
    patch = getattr(fn, "patch_size", None)
    return ModelFacts(
        n_classes=int(probe.shape[-1]), classes=None, multiple=multiple, halo_px=int(getattr(fn, "halo_px", 0)),
        patch_size=int(patch) if patch is not None else None,
    )


def as_list(models: Models) -> list[str | StorePath | ModelRef | PredictFn]:
    """``models`` as a list of members (one path or callable becomes a list of one)."""
    return [models] if isinstance(models, (str, *PATH_TYPES, ModelRef)) or callable(models) else list(models)


def resolve_members(models: Models) -> tuple[list[Member], ModelFacts]:
    """Members for tasks (paths become :class:`ModelRef`) and the ensemble's shared :class:`ModelFacts`."""
    items = as_list(models)
    if not items:
        raise ConfigError("Expected at least one model for `models`. Got none.")
    members: list[Member] = []
    facts: list[ModelFacts] = []
    for m in items:
        if isinstance(m, (str, *PATH_TYPES, ModelRef)):
            ref, f = _file_facts(m)
            members.append(ref)
        elif callable(m):
            members.append(m)
            f = _fn_facts(m)
        else:
            raise ConfigError(f"Expected model paths or callables for `models`. Got {type(m).__name__}.")
        facts.append(f)
    n = {f.n_classes for f in facts}
    if len(n) != 1:
        raise ModelError(f"Expected ensemble members with the same number of classes. Got {sorted(n)}.")
    for what in ("normalisation", "input_size"):
        values = {getattr(f, what) for f in facts}
        if len(values) != 1:
            raise ModelError(f"Expected ensemble members with one {what}. Got {sorted(map(str, values))}.")
    return members, ModelFacts(
        n_classes=n.pop(), classes=next((f.classes for f in facts if f.classes), None),
        multiple=math.lcm(*(f.multiple for f in facts)), halo_px=max(f.halo_px for f in facts),
        patch_size=facts[0].patch_size, normalisation=facts[0].normalisation, input_size=facts[0].input_size,
        samples=sum(f.samples for f in facts),
    )


def input_norm(facts: ModelFacts, norm: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The image normalisation the network input gets: the image's ``norm``, or None (raw grey values as
    float32) for networks that normalise each window themselves."""
    return None if facts.normalisation == "patch-l2" or norm is None else dict(norm)


_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _keras_fn(model: Any) -> PredictFn:
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(id(model), threading.Lock())

    def fn(x: np.ndarray) -> np.ndarray:
        with lock:  # one inference at a time per model and process; the backend uses all cores itself
            y = model.predict_on_batch(x)
        import keras

        return np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float32)

    return fn


def member_fns(members: Sequence[Member]) -> list[list[PredictFn]]:
    """Each member as its passes (functions), models loaded from this process's cache (once per worker):
    one pass, or an imported model's Monte-Carlo dropout passes (:mod:`semscale.inference.published`)."""
    from semscale.training.unet import get_cached_model

    fns: list[list[PredictFn]] = []
    for m in members:
        if isinstance(m, ModelRef):
            model, meta = get_cached_model(m.path, expected_hash=m.sha256)
            if meta.get("architecture") == "imported":
                from semscale.inference.published import member_passes

                fns.append(member_passes(model, meta, _keras_fn))
            else:
                fns.append([_keras_fn(model)])
        else:
            fns.append([m])
    return fns
