"""The paper's U-Net in Keras 3: build, receptive field, save / load with a JSON sidecar, worker-local cache.

The network is channels-last, fully convolutional with spatial size ``None``: it runs on any input whose height
and width are multiples of ``2**(len(filters) - 1)`` px. Backend-agnostic (TensorFlow, JAX, PyTorch): only
``keras`` layers are used and callers convert outputs with ``keras.ops.convert_to_numpy``.

A saved model is two files: ``<name>.keras`` (architecture + weights, loaded with ``safe_mode=True``) and
``<name>.json`` (the sidecar: classes, architecture, receptive field, normalisation, training config, ...).
Workers load a model once per process through :func:`get_cached_model`, keyed by path and content hash, so
tasks carry only the path string and the hash, never the pickled model.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from upath import UPath

from semscale import CLASSES
from semscale._version import __version__
from semscale.errors import ModelError
from semscale.store.location import StorePath, is_remote, local_copy, store_path, writing
from semscale.store.models import read_sidecar, sidecar_path

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DROPOUT",
    "DEFAULT_FILTERS",
    "NORMALISATION",
    "build_unet",
    "clear_model_cache",
    "content_hash",
    "get_cached_model",
    "load_model",
    "read_sidecar",
    "receptive_field",
    "receptive_field_extents",
    "save_model",
    "unet_filters",
    "write_model_files",
]

DEFAULT_FILTERS: tuple[int, ...] = (16, 32, 64, 128, 256)
DEFAULT_DROPOUT: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.3)

NORMALISATION: dict[str, Any] = {
    "method": "per-image percentile",
    "formula": "(x - lo) / (hi - lo), float32, no clipping",
    "percentiles": [0.5, 99.5],
    "where": "lo/hi are computed once per image and stored in the image attrs (`norm`); never per window",
}
"""How the network's input was normalised; recorded in every sidecar."""

# --- architecture ----------------------------------------------------------------------------------
def _check_arch(filters: Sequence[int], dropout: Sequence[float]) -> None:
    if len(filters) < 1 or any(int(f) < 1 for f in filters):
        raise ModelError(f"Expected positive integers for `filters`. Got {list(filters)}.")
    if len(dropout) != len(filters):
        raise ModelError(
            f"Expected one dropout rate per level for `dropout` ({len(filters)} values). "
            f"Got {len(dropout)}: {list(dropout)}."
        )
    if any(not 0.0 <= float(r) < 1.0 for r in dropout):
        raise ModelError(f"Expected dropout rates in [0, 1) for `dropout`. Got {list(dropout)}.")


def build_unet(
    *,
    n_classes: int = 4,
    filters: Sequence[int] = DEFAULT_FILTERS,
    dropout: Sequence[float] = DEFAULT_DROPOUT,
    input_channels: int = 1,
    seed: int | None = None,
) -> Any:
    """The paper's U-Net: ``len(filters) - 1`` 2×2 max-poolings, two 3×3 ReLU convs (he_normal) per level
    with dropout between them, 2×2 stride-2 transposed convs, skip concatenations, 1×1 softmax over
    ``n_classes``. With a non-default depth and default ``dropout``, the paper's rates are adapted (0.3 at
    the bottom).

    Input ``(None, None, input_channels)`` (any size that is a multiple of ``2**(len(filters) - 1)`` px);
    output ``(None, None, n_classes)`` softmax probabilities, float32 even under mixed precision.
    ``seed`` makes the initial weights reproducible.
    """
    import keras
    from keras import layers

    if dropout is DEFAULT_DROPOUT and len(filters) != len(DEFAULT_DROPOUT):
        # The default rates adapted to another depth: the paper's per-level rates, 0.3 at the bottom.
        n = len(filters) - 1
        dropout = tuple(DEFAULT_DROPOUT[: min(n, 4)]) + (0.2,) * max(0, n - 4) + (DEFAULT_DROPOUT[-1],)
    _check_arch(filters, dropout)
    if n_classes < 2:
        raise ModelError(f"Expected at least 2 classes for `n_classes`. Got {n_classes}.")
    counter = iter(range(10_000))

    def init() -> Any:
        return keras.initializers.HeNormal(seed=None if seed is None else seed + next(counter))

    def dseed() -> int | None:
        return None if seed is None else seed + 5000 + next(counter)

    def conv_block(x: Any, n: int, rate: float, name: str) -> Any:
        x = layers.Conv2D(n, 3, padding="same", activation="relu", kernel_initializer=init(),
                          name=f"{name}_conv1")(x)
        x = layers.Dropout(float(rate), seed=dseed(), name=f"{name}_dropout")(x)
        return layers.Conv2D(n, 3, padding="same", activation="relu", kernel_initializer=init(),
                             name=f"{name}_conv2")(x)

    depth = len(filters) - 1
    inputs = keras.Input(shape=(None, None, int(input_channels)), name="sem")
    x = inputs
    skips = []
    for level in range(depth):
        x = conv_block(x, int(filters[level]), dropout[level], f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = conv_block(x, int(filters[depth]), dropout[depth], "bottom")
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(int(filters[level]), 2, strides=2, padding="same",
                                   kernel_initializer=init(), name=f"up{level}")(x)
        x = layers.Concatenate(name=f"concat{level}")([x, skips[level]])
        x = conv_block(x, int(filters[level]), dropout[level], f"dec{level}")
    head_init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + next(counter))
    outputs = layers.Conv2D(int(n_classes), 1, activation="softmax", kernel_initializer=head_init,
                            dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name="unet")


def unet_filters(model: Any) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(filters, dropout)`` of a model made by :func:`build_unet` (read from its layer names)."""
    filters: list[int] = []
    rates: list[float] = []
    names = {layer.name: layer for layer in model.layers}
    level = 0
    while f"enc{level}_conv1" in names:
        filters.append(int(names[f"enc{level}_conv1"].filters))
        rates.append(float(names[f"enc{level}_dropout"].rate))
        level += 1
    if "bottom_conv1" not in names:
        raise ModelError(
            f"Expected a semscale U-Net (layers enc*_conv1, bottom_conv1) for `model`. Got `{model.name}` "
            "with other layer names; build it with semscale.training.unet.build_unet."
        )
    filters.append(int(names["bottom_conv1"].filters))
    rates.append(float(names["bottom_dropout"].rate))
    return tuple(filters), tuple(rates)


def receptive_field_extents(filters_or_model: Any) -> tuple[int, int, int]:
    """``(size, left, right)`` of the U-Net's receptive field along one axis, in px, computed exactly.

    ``left``/``right`` are the largest distances (over all alignments of the output pixel to the pooling
    grid) from an output pixel to the first/last input pixel that influences it; ``size`` the widest field.
    Zero 'same' padding is ignored (the field of an interior pixel). Computed by propagating, for each output
    position, the interval of input positions through convs (±1 at the level's resolution), 2×2 poolings,
    2×2 stride-2 transposed convs and concatenations (union).
    """
    if isinstance(filters_or_model, Sequence) and not isinstance(filters_or_model, str):
        depth = len(filters_or_model) - 1
    else:
        depth = len(unet_filters(filters_or_model)[0]) - 1

    Interval = Callable[[int], tuple[int, int]]
    memo = functools.lru_cache(maxsize=None)

    def conv(f: Interval) -> Interval:
        return memo(lambda q: (f(q - 1)[0], f(q + 1)[1]))

    def pool(f: Interval) -> Interval:
        return memo(lambda q: (f(2 * q)[0], f(2 * q + 1)[1]))

    def up(f: Interval) -> Interval:
        return memo(lambda q: f(q // 2))

    def concat(f: Interval, g: Interval) -> Interval:
        def h(q: int) -> tuple[int, int]:
            a, b = f(q), g(q)
            return min(a[0], b[0]), max(a[1], b[1])

        return memo(h)

    x: Interval = lambda q: (q, q)  # noqa: E731
    skips = []
    for _ in range(depth):
        x = conv(conv(x))
        skips.append(x)
        x = pool(x)
    x = conv(conv(x))
    for level in reversed(range(depth)):
        x = conv(conv(concat(up(x), skips[level])))
    period = 2**depth
    base = 1000 * period
    size = left = right = 0
    for q in range(base, base + period):
        lo, hi = x(q)
        size, left, right = max(size, hi - lo + 1), max(left, q - lo), max(right, hi - q)
    return size, left, right


def receptive_field(filters_or_model: Any) -> int:
    """Width in px of the U-Net's receptive field (e.g. 200 px for the paper's 4-pooling net).

    Accepts the ``filters`` sequence or a model built by :func:`build_unet`.
    """
    return receptive_field_extents(filters_or_model)[0]


def _arch_info(model: Any) -> dict[str, Any]:
    import keras

    filters, rates = unet_filters(model)
    size, left, right = receptive_field_extents(filters)
    multiple = 2 ** (len(filters) - 1)
    return {
        "architecture": "unet",
        "filters": list(filters),
        "dropout": list(rates),
        "n_classes": int(model.output_shape[-1]),
        "input_channels": int(model.input_shape[-1]),
        "multiple": multiple,
        "receptive_field_px": size,
        "halo_px": max(left, right),
        "keras_backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "semscale_version": __version__,
        "normalisation": dict(NORMALISATION),
    }


# --- save / load -----------------------------------------------------------------------------------
def save_model(model: Any, path: str | StorePath, *, sidecar: dict[str, Any]) -> StorePath:
    """Write ``path`` (``.keras``) and ``path.with_suffix(".json")``; return the ``.keras`` path.

    The sidecar is ``sidecar`` (training config, seed, patch size, metrics, ...) merged with facts taken from
    the model itself (filters, dropout, n_classes, receptive field, halo, backend, semscale version,
    normalisation); ``classes`` defaults to the first ``n_classes`` of ``semscale.CLASSES``.
    """
    path = store_path(path)
    if path.suffix != ".keras":
        raise ModelError(f"Expected a `.keras` file name for `path`. Got {path}; use e.g. member_0.keras.")
    info = _arch_info(model)
    meta = {**dict(sidecar), **info}
    classes = list(meta.get("classes") or CLASSES[: info["n_classes"]])
    if len(classes) != info["n_classes"]:
        raise ModelError(
            f"Expected {info['n_classes']} class names in `sidecar['classes']` (the model's outputs). "
            f"Got {classes}."
        )
    meta["classes"] = classes
    meta.setdefault("patch_size", 256)
    write_model_files(model, path, meta)
    log.info("saved model %s (receptive field %d px)", path, info["receptive_field_px"])
    return path


def write_model_files(model: Any, path: StorePath, meta: dict[str, Any]) -> None:
    """Write ``path`` (``.keras``) and its sidecar ``meta``, each atomically (replaced whole)."""
    with writing(path) as tmp:
        model.save(tmp)
    with writing(sidecar_path(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj: Any) -> Any:
    try:
        return obj.item()  # numpy scalars
    except AttributeError:
        pass
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path | UPath):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_model(path: str | StorePath, *, compile: bool = False) -> tuple[Any, dict[str, Any]]:
    """Load ``(model, sidecar)`` from a ``.keras`` file with ``safe_mode=True``; validate the sidecar."""
    import keras

    path = store_path(path)
    meta = read_sidecar(path)
    try:
        with local_copy(path) as local:
            model = keras.saving.load_model(local, compile=compile, safe_mode=True)
    except Exception as exc:
        raise ModelError(f"Could not load Keras model {path} (safe_mode=True): {exc}") from exc
    n_out = int(model.output_shape[-1])
    if n_out != len(meta["classes"]):
        raise ModelError(
            f"Expected {len(meta['classes'])} outputs (sidecar classes {meta['classes']}) for model {path}. "
            f"Got {n_out}; the sidecar belongs to another model."
        )
    return model, meta


def content_hash(path: str | StorePath) -> str:
    """sha256 (hex) of the ``.keras`` file's bytes."""
    h = hashlib.sha256()
    with store_path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- worker-local cache ----------------------------------------------------------------------------
_CACHE: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {}
_CACHE_LOCK = threading.Lock()
_HASH_MEMO: dict[tuple[str, int, int], str] = {}
LOAD_COUNT = 0
"""How many times this process loaded a model from disk (tests check that workers load once)."""


def _hash_memo(path: StorePath) -> str:
    if is_remote(path):  # no cheap change stamp: the client passes the hash (get_cached_model)
        return content_hash(path)
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _HASH_MEMO:
        _HASH_MEMO[key] = content_hash(path)
    return _HASH_MEMO[key]


def get_cached_model(
    path: str | StorePath, *, expected_hash: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """``(model, sidecar)`` from a per-process cache keyed by ``(path, content hash)``.

    ``expected_hash`` (from the client) saves re-hashing the file in every task; a file whose content no
    longer matches it raises :class:`ModelError` (the model changed under a running job).
    """
    global LOAD_COUNT
    path = store_path(path)
    digest = expected_hash or _hash_memo(path)
    key = (str(path), digest)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        if expected_hash is not None and _hash_memo(path) != expected_hash:
            raise ModelError(
                f"Expected model {path} with sha256 {expected_hash[:12]}…. Got different content; the file "
                "changed while a job was running. Rerun the job."
            )
        model, meta = load_model(path)
        LOAD_COUNT += 1
        _CACHE[key] = (model, meta)
        log.debug("loaded model %s into the worker cache", path)
        return model, meta


def clear_model_cache() -> None:
    """Forget every cached model in this process."""
    with _CACHE_LOCK:
        _CACHE.clear()
