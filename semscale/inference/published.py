"""Models trained elsewhere, run unchanged: the published study's Keras HDF5 U-Nets in a store.

The authors' networks are Keras HDF5 files: fixed 256² inputs, dropout layers called with
``training=True`` (so active whenever the network runs), inputs normalised per window as
``keras.utils.normalize(x, axis=1)`` does. :func:`import_models` reads such files (written by Keras 3, or
by Keras 2 / ``tf_keras``), checks them, works out their geometry from the layer graph
(:func:`graph_geometry`) and stores each as a member ``models/<name>/member_k.keras`` with a sidecar that
records the source file, the normalisation and what dropout does at inference.

At inference (:func:`member_passes`) the dropout layers are either *off* (identity: one deterministic
pass) or *Monte-Carlo* (``passes`` stochastic passes whose mean and standard deviation feed the outputs as
the members of an ensemble do). A pass's dropout masks are seeded from the sidecar's seed, the pass number,
the layer and the content of the batch of windows, so a run is reproducible and does not depend on which
worker or in which order the blocks ran (it does depend on how windows are batched, that is on the block
size). Keras is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semscale.errors import ModelError
from semscale.kernels.norm import NORMALISATIONS, patch_l2

if TYPE_CHECKING:
    from semscale.kernels.blending import PredictFn
    from semscale.store.layout import CampaignStore

log = logging.getLogger(__name__)

__all__ = ["GraphFacts", "build_published_unet", "graph_geometry", "import_models", "load_hdf5", "member_passes", "normalisation_of"]

PATCH_L2 = {
    "method": "patch-l2",
    "formula": "x / ||x||_2 along axis 1 (the rows) of each window, a zero norm counted as 1; "
               "keras.utils.normalize(x, axis=1)",
    "where": "every window on its own, on raw grey values, just before the network",
}
IMAGE_NORM_NOTE = "per-image percentile normalisation, as semscale's own models (see semscale.training.unet)"

_IDENTITY = {"InputLayer", "Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "AlphaDropout",
             "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Identity",
             "LayerNormalization"}
_DROPOUT = {"Dropout", "SpatialDropout2D", "GaussianDropout", "AlphaDropout"}
_CONV = {"Conv2D", "SeparableConv2D", "DepthwiseConv2D"}
_POOL = {"MaxPooling2D", "AveragePooling2D"}
_UP = {"Conv2DTranspose", "UpSampling2D"}
_MERGE = {"Concatenate", "Add", "Average", "Maximum", "Minimum", "Multiply", "Subtract"}
_KERAS2_ONLY_KEYS = {"Conv2DTranspose": ("groups",)}
"""Config keys that Keras 2 writes and Keras 3 rejects, per layer class (dropped on import, unused)."""


# --- the published architecture (for tests, benchmarks and the GPU script) -----------------------
def build_published_unet(*, filters: Sequence[int] = (16, 32, 64, 128, 256),
                         dropout: Sequence[float] = (0.1, 0.1, 0.2, 0.2, 0.3), n_classes: int = 4,
                         input_size: int = 256, training_dropout: bool = True, seed: int = 0) -> Any:
    """The published U-Net as its authors wrote it: a fixed ``input_size``² one-channel input, per level
    two 3×3 he_normal ReLU convs with dropout between them (called with ``training=True`` when
    ``training_dropout``), 2×2 max-pooling, 2×2 stride-2 transposed convs, concatenations, a 1×1 softmax.
    Untrained (weights from ``seed``)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(seed)
    kw = {"training": True} if training_dropout else {}

    def block(x: Any, n: int, rate: float) -> Any:
        x = L.Conv2D(n, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same")(x)
        x = L.Dropout(rate)(x, **kw)
        return L.Conv2D(n, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same")(x)

    inputs = L.Input((input_size, input_size, 1))
    x, skips = inputs, []
    for n, rate in zip(filters[:-1], dropout[:-1]):
        x = block(x, int(n), float(rate))
        skips.append(x)
        x = L.MaxPooling2D((2, 2))(x)
    x = block(x, int(filters[-1]), float(dropout[-1]))
    for n, rate, skip in zip(filters[-2::-1], dropout[-2::-1], skips[::-1]):
        x = L.Conv2DTranspose(int(n), (2, 2), strides=(2, 2), padding="same")(x)
        x = block(L.concatenate([x, skip]), int(n), float(rate))
    return keras.Model(inputs, L.Conv2D(n_classes, (1, 1), activation="softmax")(x))


# --- geometry from the layer graph ----------------------------------------------------------------
@dataclass(frozen=True)
class GraphFacts:
    """What inference needs to know of a network, read from its layers (sizes in px)."""

    multiple: int
    """Input sizes must be multiples of this (the product of the deepest path's pooling strides)."""
    receptive_field_px: int
    halo_px: int
    """Largest one-sided receptive-field extent."""
    input_size: int | None
    """The fixed square input edge, or None for a network that takes any multiple of ``multiple``."""
    filters: tuple[int, ...]
    """Filters of the first convolution of each resolution level, from the top (informational)."""
    dropout: tuple[float, ...]
    """Dropout rates in graph order."""


def _tensor_sources(obj: Any) -> list[str]:
    """Names of the layers whose outputs appear in a serialised call (``keras_history`` entries)."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return [str(obj["config"]["keras_history"][0])]
        return [n for v in obj.values() for n in _tensor_sources(v)]
    if isinstance(obj, (list, tuple)):
        return [n for v in obj for n in _tensor_sources(v)]
    return []


def _pair(v: Any) -> int:
    vals = [int(a) for a in (v if isinstance(v, (list, tuple)) else (v, v))]
    if len(set(vals)) != 1:
        raise ModelError(f"Expected square kernels, strides and pools. Got {vals}.")
    return vals[0]


Interval = Callable[[int], tuple[int, int]]


def _node_fn(kind: str, cfg: dict[str, Any], inputs: list[tuple[Interval, int]], name: str
             ) -> tuple[Interval, int]:
    """The input interval of an output position of one layer, and the layer's scale (input px per px)."""
    import functools

    memo = functools.lru_cache(maxsize=None)
    if kind in _MERGE:
        scales = {s for _, s in inputs}
        if len(scales) != 1:
            raise ModelError(f"Expected inputs of one resolution at merge layer `{name}`. Got scales {scales}.")
        fs = [f for f, _ in inputs]
        return memo(lambda q: (min(f(q)[0] for f in fs), max(f(q)[1] for f in fs))), inputs[0][1]
    if len(inputs) != 1:
        raise ModelError(f"Expected one input at layer `{name}` ({kind}). Got {len(inputs)}.")
    f, scale = inputs[0]
    if kind in _IDENTITY:
        return f, scale
    if kind in _CONV:
        k, d = _pair(cfg.get("kernel_size", 1)), _pair(cfg.get("dilation_rate", 1))
        if _pair(cfg.get("strides", 1)) != 1 or (k > 1 and cfg.get("padding", "valid") != "same"):
            raise ModelError(f"Expected stride-1 'same' convolutions. Got layer `{name}` with strides "
                             f"{cfg.get('strides')} and padding {cfg.get('padding')!r}.")
        left, right = d * ((k - 1) // 2), d * (k // 2)
        return memo(lambda q: (f(q - left)[0], f(q + right)[1])), scale
    if kind in _POOL:
        p = _pair(cfg.get("pool_size", 2))
        s = _pair(cfg.get("strides") or p)
        return memo(lambda q: (f(s * q)[0], f(s * q + p - 1)[1])), scale * s
    if kind in _UP:
        s = _pair(cfg.get("size", cfg.get("strides", 2)))
        if kind == "Conv2DTranspose" and (_pair(cfg["kernel_size"]) != s or cfg.get("padding") != "same"):
            raise ModelError(f"Expected transposed convolutions with kernel = stride and 'same' padding. Got "
                             f"layer `{name}` with kernel {cfg['kernel_size']}, strides {cfg.get('strides')}.")
        if scale % s:
            raise ModelError(f"Expected upsampling back to a pooled resolution at layer `{name}`. Got scale "
                             f"{scale} / {s}.")
        return memo(lambda q: f(q // s)), scale // s
    raise ModelError(
        f"Expected layers semscale can analyse ({', '.join(sorted(_IDENTITY | _CONV | _POOL | _UP | _MERGE))}). "
        f"Got layer `{name}` of type {kind}; it cannot be imported."
    )


def graph_geometry(model: Any) -> GraphFacts:
    """:class:`GraphFacts` of a functional Keras model, computed exactly from its layer graph.

    Every output position is traced back to the interval of input positions it depends on (as
    :func:`semscale.training.unet.receptive_field_extents` does for semscale's own U-Net), over all
    alignments to the pooling grid; zero 'same' padding is ignored (the field of an interior pixel).
    """
    config = model.get_config()
    layers = config.get("layers")
    if not layers:
        raise ModelError(f"Expected a functional Keras model. Got `{getattr(model, 'name', model)}` without "
                         "a layer graph.")
    fns: dict[str, tuple[Interval, int]] = {}
    filters: list[int] = []
    level_scales: set[int] = set()
    rates: list[float] = []
    for layer in layers:
        name, kind, cfg = layer["name"], layer["class_name"], layer.get("config", {})
        nodes = layer.get("inbound_nodes") or []
        if kind == "InputLayer":
            fns[name] = ((lambda q: (q, q)), 1)
            continue
        if len(nodes) != 1:
            raise ModelError(f"Expected each layer called once. Got layer `{name}` called {len(nodes)} times.")
        fns[name] = _node_fn(kind, cfg, [fns[n] for n in _tensor_sources(nodes[0])], name)
        if kind in _CONV and fns[name][1] not in level_scales:  # the first convolution of a deeper level
            level_scales.add(fns[name][1])
            filters.append(int(cfg.get("filters", 0)))
        if kind in _DROPOUT:
            rates.append(float(cfg.get("rate", 0.0)))
    outputs = config.get("output_layers") or []
    if outputs and isinstance(outputs[0], str):  # one output written as [name, node, tensor]
        outputs = [outputs]
    out_names = [str(entry[0]) for entry in outputs]
    if len(out_names) != 1:
        raise ModelError(f"Expected one output. Got {len(out_names)}.")
    out, scale = fns[out_names[0]]
    if scale != 1:
        raise ModelError(f"Expected the output at the input's resolution. Got scale {scale}.")
    multiple = max(s for _, s in fns.values())
    base = 1000 * multiple
    size = left = right = 0
    try:
        for q in range(base, base + multiple):
            lo, hi = out(q)
            size, left, right = max(size, hi - lo + 1), max(left, q - lo), max(right, hi - q)
    except RecursionError:
        raise ModelError(f"Expected a network of at most a few hundred layers in sequence. Got "
                         f"{len(layers)} layers, too deep to trace its receptive field.") from None
    shape = tuple(model.input_shape)
    fixed = shape[1] if shape[1] is not None and shape[1] == shape[2] else None
    return GraphFacts(multiple=multiple, receptive_field_px=size, halo_px=max(left, right),
                      input_size=int(fixed) if fixed is not None else None, filters=tuple(filters),
                      dropout=tuple(rates))


# --- reading HDF5 ---------------------------------------------------------------------------------
def load_hdf5(path: Path) -> Any:
    """A Keras model from a legacy HDF5 file written by Keras 3 or Keras 2 (``tf_keras``), uncompiled.

    Keras 2 writes a few config keys Keras 3 rejects (:data:`_KERAS2_ONLY_KEYS`); they are dropped from a
    temporary copy before loading. The weights are read as they are."""
    import h5py
    import keras

    try:
        with h5py.File(path, "r") as fh:
            if "model_config" not in fh.attrs:
                raise ModelError(f"Expected a whole Keras model (architecture + weights) in {path}. Got an "
                                 "HDF5 file without `model_config` (weights only?); save it with model.save().")
            config = json.loads(fh.attrs["model_config"])
            version = fh.attrs.get("keras_version")
    except OSError as exc:
        raise ModelError(f"Expected a Keras HDF5 model file at {path}. Got a file h5py cannot read: {exc}.") from None
    changed = _drop_keras2_keys(config)
    with tempfile.TemporaryDirectory() as tmp:
        source = path
        if changed:
            source = Path(tmp) / path.name
            shutil.copyfile(path, source)
            with h5py.File(source, "r+") as fh:
                fh.attrs["model_config"] = json.dumps(config)
        try:
            model = keras.models.load_model(source, compile=False)
        except Exception as exc:  # any Keras failure to deserialise: say which file and why
            raise ModelError(f"Could not load the Keras HDF5 model {path} (written by Keras {version}): "
                             f"{exc}") from None
    log.debug("loaded %s (Keras %s%s)", path, version, ", Keras 2 keys dropped" if changed else "")
    return model


def _drop_keras2_keys(config: Any) -> bool:
    changed = False
    if isinstance(config, dict):
        drop = _KERAS2_ONLY_KEYS.get(str(config.get("class_name")), ())
        inner = config.get("config")
        if drop and isinstance(inner, dict):
            for key in drop:
                changed |= inner.pop(key, None) is not None
        for v in config.values():
            changed |= _drop_keras2_keys(v)
    elif isinstance(config, list):
        for v in config:
            changed |= _drop_keras2_keys(v)
    return changed


# --- import ---------------------------------------------------------------------------------------
def _check_io(model: Any, path: Path, n_classes: int) -> None:
    shape_in, shape_out = tuple(model.input_shape), tuple(model.output_shape)
    if len(shape_in) != 4 or shape_in[-1] != 1:
        raise ModelError(f"Expected a network on one-channel images (n, h, w, 1) in {path}. Got input shape "
                         f"{shape_in}.")
    if len(shape_out) != 4 or shape_out[-1] != n_classes:
        raise ModelError(f"Expected {n_classes} class outputs (n, h, w, {n_classes}) in {path}. Got output "
                         f"shape {shape_out}; pass --classes with the model's class names in output order.")
    last = model.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if type(last).__name__ != "Softmax" and activation != "softmax":
        raise ModelError(f"Expected class probabilities (a softmax output) from {path}. Got last layer "
                         f"`{last.name}` with activation {activation}.")


def import_models(
    store: CampaignStore, files: Sequence[str | Path], *, name: str, normalisation: str,
    mc_dropout: int = 0, seed: int = 0, classes: Sequence[str] | None = None, overwrite: bool = False,
) -> dict[str, Any]:
    """Bring Keras HDF5 models into ``store`` as the members of model ``name`` (``models/<name>/member_k``,
    k in the order of ``files``); returns the model's listing row.

    ``normalisation``: ``patch-l2`` (the published study) or ``image``; ``mc_dropout``: Monte-Carlo passes
    at inference (0: dropout off); ``classes``: output class names (default: the store's). An existing
    model ``name`` is replaced only with ``overwrite``. Every file is checked before anything is written.
    """
    from semscale.store.models import list_models, member_indices

    if normalisation not in NORMALISATIONS:
        raise ModelError(f"Expected --normalisation one of {list(NORMALISATIONS)}. Got {normalisation!r}.")
    if mc_dropout < 0:
        raise ModelError(f"Expected --mc-dropout >= 0 (0: dropout off). Got {mc_dropout}.")
    if not files:
        raise ModelError("Expected at least one model file to import. Got none.")
    names = list(classes or store.classes)
    if member_indices(store, name) and not overwrite:
        raise ModelError(f"Expected a new model name. Got `{name}`, which {store.path} already holds; pass "
                         "--overwrite to replace it or choose another --name.")
    loaded = []
    for f in map(Path, files):
        if not f.is_file():
            raise ModelError(f"Expected a model file at {f}. Got no such file.")
        model = load_hdf5(f)
        _check_io(model, f, len(names))
        geo = graph_geometry(model)
        if mc_dropout and not geo.dropout:
            raise ModelError(f"Expected dropout layers for --mc-dropout in {f}. Got none; import without it.")
        loaded.append((f, model, geo))
    with store.writer("models import"):
        _write_imported(store, loaded, name=name, names=names, normalisation=normalisation,
                        mc_dropout=mc_dropout, seed=seed, overwrite=overwrite)
    return next(m for m in list_models(store) if m["name"] == name)


def _write_imported(store: CampaignStore, loaded: Sequence[tuple[Path, Any, GraphFacts]], *, name: str,
                    names: list[str], normalisation: str, mc_dropout: int, seed: int, overwrite: bool) -> None:
    from semscale.training.unet import content_hash, write_model_files

    if overwrite:
        store.remove_model(name)
    store.model_dir(name, create=True)
    for k, (f, model, geo) in enumerate(loaded):
        meta = {
            "architecture": "imported", "member": k, "classes": names, "n_classes": len(names),
            "input_channels": 1, "patch_size": geo.input_size or 256, "input_size": geo.input_size,
            "multiple": geo.multiple, "receptive_field_px": geo.receptive_field_px, "halo_px": geo.halo_px,
            "filters": list(geo.filters), "dropout": list(geo.dropout),
            "normalisation": dict(PATCH_L2) if normalisation == "patch-l2" else {"method": "image",
                                                                                 "note": IMAGE_NORM_NOTE},
            "dropout_inference": {"passes": int(mc_dropout), "seed": int(seed)},
            "source": {"file": f.name, "sha256": content_hash(f), "format": "keras-hdf5"},
        }
        write_model_files(model, store.member_file(name, k, "model"), meta)
        log.info("imported %s as %s/member_%d (receptive field %d px, %s)", f, name, k, geo.receptive_field_px,
                 f"{mc_dropout} MC-dropout passes" if mc_dropout else "dropout off")


def normalisation_of(meta: dict[str, Any]) -> str:
    """``patch-l2`` or ``image``: how a model's sidecar says its input is normalised."""
    method = meta.get("normalisation", {})
    return "patch-l2" if isinstance(method, dict) and method.get("method") == "patch-l2" else "image"


# --- inference ------------------------------------------------------------------------------------
_VARIANTS: dict[tuple[int, int], list[Any]] = {}
_VARIANTS_LOCK = threading.Lock()


def _clone(model: Any, *, stochastic: bool) -> tuple[Any, list[Any]]:
    """``model`` with its dropout layers replaced: by identities, or by always-on seeded dropout (the
    other layers are shared, weights included). Returns ``(clone, seeded dropout layers)``."""
    import keras

    class SeededDropout(keras.layers.Layer):
        """Dropout at every call (the published networks' ``training=True``), masks from a settable seed."""

        def __init__(self, rate: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.rate = float(rate)
            self.seed_generator = keras.random.SeedGenerator(0)

        def call(self, x: Any, training: Any = None) -> Any:
            return keras.random.dropout(x, self.rate, seed=self.seed_generator)

    seeded: list[Any] = []

    def swap(layer: Any) -> Any:
        if type(layer).__name__ not in _DROPOUT:
            return layer
        if not stochastic:
            return keras.layers.Identity(name=layer.name)
        new = SeededDropout(getattr(layer, "rate", 0.0), name=layer.name)
        seeded.append(new)
        return new

    return keras.models.clone_model(model, clone_function=swap), seeded


def _batch_key(x: np.ndarray) -> int:
    return int.from_bytes(hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest()[:4], "little")


def member_passes(model: Any, meta: dict[str, Any], keras_fn: Callable[[Any], PredictFn]) -> list[PredictFn]:
    """The passes of one imported member as functions of raw windows ``(n, h, w, 1)`` → probabilities:
    one deterministic pass (dropout off) or the sidecar's Monte-Carlo passes; each normalises its windows
    first when the model expects ``patch-l2``. ``keras_fn`` turns a Keras model into a locked function."""
    drop = meta.get("dropout_inference") or {}
    passes, seed = int(drop.get("passes", 0)), int(drop.get("seed", 0))
    key = (id(model), passes)
    with _VARIANTS_LOCK:
        if key not in _VARIANTS:
            _VARIANTS[key] = [*_clone(model, stochastic=passes > 0), threading.Lock()]
    clone, seeded, lock = _VARIANTS[key]  # one lock per clone: its seeds and its call belong together
    net = keras_fn(clone)
    norm = normalisation_of(meta) == "patch-l2"

    def prepare(x: np.ndarray) -> np.ndarray:
        return patch_l2(x) if norm else x

    if passes == 0:
        return [lambda x: net(prepare(x))]

    def one_pass(k: int) -> PredictFn:
        def fn(x: np.ndarray) -> np.ndarray:
            x = prepare(x)
            content = _batch_key(x)
            with lock:
                for j, layer in enumerate(seeded):
                    state = np.random.SeedSequence([seed, k, j, content]).generate_state(1, np.uint32)[0]
                    layer.seed_generator.state.assign(np.array([int(state), 0], dtype="int64"))
                return net(x)

        return fn

    return [one_pass(k) for k in range(passes)]

