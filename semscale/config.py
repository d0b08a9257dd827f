"""Campaign configuration: typed, validated, loaded from YAML.

A campaign config names the store, the phase classes, the pixel size and every image with its EDS maps and
labels (the ``images:`` contract of the design notes), plus one optional section per pipeline stage
(``ingest``, ``labelling``, ``training``, ``inference``, ``cluster``). Every section is a frozen dataclass
that validates itself when built; unknown keys, wrong types, duplicate ids, bad id characters and missing
files raise :class:`~semscale.errors.ConfigError` naming the file, the key, what was expected and what was
found. Relative paths resolve against the config file's folder. ``to_dict()`` round-trips to YAML-able data
and is stored in the campaign store's attrs, so every result says how it was made.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from semscale import CLASSES
from semscale.errors import ConfigError

__all__ = [
    "CampaignConfig",
    "ClusterConfig",
    "ImageEntry",
    "InferenceConfig",
    "IngestConfig",
    "LabellingConfig",
    "Switch",
    "TrainingConfig",
    "choices",
    "load_config",
]

Switch = Literal["auto", "on", "off"]
"""A three-way option (``cluster.gpu``, ``training.mixed_precision``); YAML's true/false (on/off, yes/no)
read as "on"/"off"."""

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
ROLES = ("train", "test", "predict")


@dataclass(frozen=True)
class IngestConfig:
    """How images enter the store."""

    chunk_size: int = 1024
    """Zarr chunk edge (px) of SEM and label arrays."""

    def __post_init__(self) -> None:
        _check(self.chunk_size >= 16, "ingest.chunk_size", "an integer >= 16", self.chunk_size)


@dataclass(frozen=True)
class LabellingConfig:
    """EDS-guided automatic target labels (random forest on SEM + registered EDS features)."""

    sigmas: tuple[float, ...] = (0.7, 1.0, 2.0, 4.0, 8.0, 16.0)
    """Scales (SEM px) of the multiscale SEM features."""
    n_estimators: int = 100
    max_depth: int | None = 20
    max_seeds_per_class: int = 20000
    """Seed pixels kept per class and image for training the random forest."""
    refine_sigma: float | None = 0.5
    """Snap the forest's labels to the SEM's edges (superpixels of the SEM smoothed at this σ, px); null: off."""
    self_training: bool = True
    """A second forest, trained on pixels drawn from the first round's labels everywhere, labels the image."""
    seed: int = 0
    n_jobs: int = -1

    def __post_init__(self) -> None:
        _check(len(self.sigmas) > 0 and all(s > 0 for s in self.sigmas), "labelling.sigmas",
               "a non-empty list of positive numbers", list(self.sigmas))
        _check(self.n_estimators >= 1, "labelling.n_estimators", "an integer >= 1", self.n_estimators)
        _check(self.max_seeds_per_class >= 10, "labelling.max_seeds_per_class", "an integer >= 10",
               self.max_seeds_per_class)
        _check(self.refine_sigma is None or self.refine_sigma >= 0, "labelling.refine_sigma",
               "a number >= 0 or null", self.refine_sigma)


@dataclass(frozen=True)
class TrainingConfig:
    """U-Net training; defaults follow the published method (256² patches, batch 32, Adam 1e-3).

    The only home of every training option: :func:`semscale.training.fit.train_member`,
    :func:`semscale.training.ensemble.train_ensemble` and the patch sampler read them from here; overrides
    (CLI ``--epochs``, ``--ensemble``, ``--steps``) build a new section with ``dataclasses.replace``.
    """

    name: str = "unet"
    """Model name: members are stored as ``models/<name>/member_k.keras``."""
    label_source: str = "target"
    patch_size: int = 256
    batch_size: int = 32
    epochs: int = 250
    steps_per_epoch: int | None = None
    """Batches per epoch; null: 10 windows per training tile (the paper's 10 augmented patches per tile)."""
    learning_rate: float = 1e-3
    filters: tuple[int, ...] = (16, 32, 64, 128, 256)
    dropout: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.3)
    augment: bool = True
    """Dihedral flips/rotations, blur, contrast, brightness and Gaussian–Poisson noise on the fly."""
    ensemble: int = 1
    """Number of ensemble members (member k trains with seed ``seed + k``)."""
    split: Literal["tiles", "images"] = "tiles"
    test_tiles_fraction: float = 140 / 1232
    """Share of the P×P tile grid held out as test tiles (the paper: 140 of 1232)."""
    seed: int = 0
    mixed_precision: Switch = "auto"
    """float16 compute: ``auto`` on a GPU, ``on``, ``off`` (YAML true/false accepted)."""
    n_test_tiles: int | None = None
    """Number of test tiles; null: ``round(test_tiles_fraction × tiles)``."""
    rare_fraction: float = 0.3
    """Share of windows centred on a pixel of a rare class."""
    rare_threshold: float | None = None
    """A class is rare below this share of the labelled training area; null: ``0.5 / n_classes``."""
    ignore_boundary_px: float = 0.0
    """Target pixels within this distance (px) of another class are left out of the loss."""
    monitor: Literal["val_mean_iou", "val_accuracy", "loss"] = "val_mean_iou"
    """What chooses the best epoch (the exported weights)."""
    jit_compile: bool | Literal["auto"] = "auto"
    """Keras' XLA switch (``auto``: where the backend supports it; false starts faster)."""
    threads: int | None = None
    """TensorFlow CPU threads per member (e.g. 1 for one-thread Dask workers); null: TensorFlow's choice."""
    workers: int = 2
    """Threads (or processes) of the sampler that prefetch batches while the model trains."""
    use_multiprocessing: bool = False
    max_queue_size: int = 8
    """Batches the sampler's workers prefetch."""
    in_memory: bool = False
    """Read each training image whole into memory instead of slicing windows out of Zarr (small campaigns)."""
    cache_mb: float = 512.0
    """LRU cache of decoded Zarr chunks shared by the sampler's workers (MiB; 0: none)."""
    verbose: int = 0
    """Keras ``fit`` verbosity (0: the one log line per epoch only)."""
    first_member: int = 0
    """Members ``first_member .. first_member + ensemble - 1`` are trained (to add members later)."""
    retries: int = 1
    """How often a failed member task is retried on the cluster (it resumes from its checkpoint)."""

    def __post_init__(self) -> None:
        _check(bool(ID_PATTERN.match(self.name)), "training.name", "a name of [A-Za-z0-9_.-]", self.name)
        depth = len(self.filters) - 1
        _check(len(self.filters) >= 2 and all(f >= 1 for f in self.filters), "training.filters",
               "at least two positive integers", list(self.filters))
        _check(len(self.dropout) == len(self.filters), "training.dropout",
               f"{len(self.filters)} rates (one per level of `filters`)", list(self.dropout))
        _check(all(0 <= r < 1 for r in self.dropout), "training.dropout", "rates in [0, 1)", list(self.dropout))
        _check(self.patch_size >= 2**depth and self.patch_size % 2**depth == 0, "training.patch_size",
               f"a multiple of {2**depth} (2**poolings)", self.patch_size)
        for key, least, optional in (("batch_size", 1, False), ("epochs", 1, False), ("ensemble", 1, False),
                                     ("workers", 1, False), ("max_queue_size", 1, False), ("first_member", 0, False),
                                     ("retries", 0, False), ("steps_per_epoch", 1, True), ("threads", 1, True),
                                     ("n_test_tiles", 0, True)):
            value = getattr(self, key)
            _check((optional and value is None) or (value is not None and value >= least), f"training.{key}",
                   f"an integer >= {least}" + (" or null" if optional else ""), value)
        _switch(self, "mixed_precision", "training.mixed_precision")
        for key, choices in (("split", ("tiles", "images")), ("mixed_precision", ("auto", "on", "off")),
                             ("monitor", ("val_mean_iou", "val_accuracy", "loss")),
                             ("jit_compile", (True, False, "auto")), ("verbose", (0, 1, 2))):
            _check(getattr(self, key) in choices, f"training.{key}", "one of " + ", ".join(map(repr, choices)),
                   getattr(self, key))
        _check(self.learning_rate > 0, "training.learning_rate", "a positive number", self.learning_rate)
        _check(0 <= self.test_tiles_fraction < 1, "training.test_tiles_fraction", "a number in [0, 1)",
               self.test_tiles_fraction)
        _check(0 <= self.rare_fraction <= 1, "training.rare_fraction", "a number in [0, 1]", self.rare_fraction)
        _check(self.rare_threshold is None or 0 < self.rare_threshold < 1, "training.rare_threshold",
               "a number in (0, 1) or null", self.rare_threshold)
        _check(self.ignore_boundary_px >= 0, "training.ignore_boundary_px", "a number >= 0 (px)",
               self.ignore_boundary_px)
        _check(self.cache_mb >= 0, "training.cache_mb", "a number >= 0 (MiB)", self.cache_mb)


@dataclass(frozen=True)
class InferenceConfig:
    """Blockwise segmentation of SEM images (sliding windows or large tiles, on a Dask cluster).

    The one home of every inference setting: :func:`semscale.inference.predict`,
    :func:`~semscale.inference.predict_to_store` and :func:`~semscale.inference.segment_array` take this
    section whole; override a setting with ``dataclasses.replace(cfg, stride=64)``.
    """

    model: str | None = None
    """Model name under ``models/``; default: ``training.name``."""
    mode: Literal["average", "gaussian", "tile"] = "tile"
    """``average``/``gaussian``: blend windows of ``patch_size`` at ``stride``; ``tile``: the fully
    convolutional network on large tiles with a context halo (about one evaluation per pixel)."""
    patch_size: int | None = None
    """Window edge (px) for ``average``/``gaussian``; default: the model sidecar's (its training patch)."""
    stride: int | None = None
    """Window stride (px) for ``average``/``gaussian``; default: the patch size (the paper's fast setting)."""
    tile_size: int = 1024
    """Largest tile edge (px) in ``tile`` mode; tiles are also cut at block edges."""
    sigma_fraction: float = 0.125
    """``gaussian``: σ of the window weights as a fraction of the patch size."""
    tta: bool = False
    """Test-time augmentation over the 8 flips/rotations."""
    batch_size: int = 8
    """Windows per network call (window modes)."""
    block_size: int | None = None
    """Edge (px) of one block task, a multiple of the SEM chunk; default: one SEM chunk (in-memory images:
    ``ingest.chunk_size``)."""
    retries: int = 2
    """Retries of a failed block task on a Dask cluster."""
    probabilities: bool = False
    """Also write per-class probabilities (float16)."""

    def __post_init__(self) -> None:
        modes = ("average", "gaussian", "tile")
        _check(self.mode in modes, "inference.mode", "one of " + ", ".join(map(repr, modes)), self.mode)
        if self.patch_size is not None:
            _check(self.patch_size >= 16, "inference.patch_size", "an integer >= 16 or null", self.patch_size)
        if self.stride is not None:
            top = self.patch_size if self.patch_size is not None else "patch_size"
            _check(self.stride >= 1 and (self.patch_size is None or self.stride <= self.patch_size),
                   "inference.stride", f"an integer in 1..{top}", self.stride)
        _check(self.tile_size >= 16, "inference.tile_size", "an integer >= 16", self.tile_size)
        _check(self.sigma_fraction > 0, "inference.sigma_fraction", "a positive number", self.sigma_fraction)
        _check(self.batch_size >= 1, "inference.batch_size", "an integer >= 1", self.batch_size)
        if self.block_size is not None:
            _check(self.block_size >= 16, "inference.block_size", "an integer >= 16 or null", self.block_size)
        _check(self.retries >= 0, "inference.retries", "an integer >= 0", self.retries)


@dataclass(frozen=True)
class ClusterConfig:
    """Where Dask work runs: an existing scheduler, or a local (CUDA) cluster built for this machine."""

    address: str | None = None
    """Scheduler to connect to (``tcp://host:8786``); null: start a local cluster."""
    n_workers: int | None = None
    """Local workers; default one per visible GPU, else ``max(1, cpus // 4)``."""
    threads_per_worker: int | None = None
    """Threads per local CPU worker; default 1 (GPU workers always have 1)."""
    memory_limit: str = "auto"
    """Per-worker memory limit (``4GB``, ``auto``), as Dask reads it."""
    gpu: Switch = "auto"
    """``auto``: dask-cuda GPU workers when GPUs are visible and dask-cuda is installed; ``on``: require
    them; ``off``: CPU workers that see no GPU. ``CUDA_VISIBLE_DEVICES`` picks the devices."""
    dashboard_address: str | None = "127.0.0.1:8787"
    """``host:port`` the dashboard of a local cluster listens on (port 0: any free one; ``:8787`` or
    ``0.0.0.0:8787``: every interface); null: no dashboard."""

    def __post_init__(self) -> None:
        for name in ("n_workers", "threads_per_worker"):
            value = getattr(self, name)
            _check(value is None or value >= 1, f"cluster.{name}", "an integer >= 1 or null", value)
        _switch(self, "gpu", "cluster.gpu")
        if self.dashboard_address is not None:
            _host, sep, port = self.dashboard_address.rpartition(":")
            _check(bool(sep) and port.isdigit() and int(port) <= 65535, "cluster.dashboard_address",
                   "HOST:PORT (e.g. 127.0.0.1:8787; port 0 picks a free one) or null", self.dashboard_address)


@dataclass(frozen=True)
class ImageEntry:
    """One SEM image of the campaign, with its optional EDS maps and label images."""

    id: str
    sem: Path
    sample: str = ""
    oxidation_min: float | None = None
    eds: dict[str, Path] = field(default_factory=dict)
    target: Path | None = None
    truth: Path | None = None
    scribbles: Path | None = None
    """Optional sparse user labels (uint8, 255 = unlabelled) that add to the automatic EDS seeds."""
    role: Literal["train", "test", "predict"] | None = None
    """Default: ``train`` when the image has EDS maps or a target, else ``predict``."""

    def __post_init__(self) -> None:
        if self.role is None:
            object.__setattr__(self, "role", "train" if (self.eds or self.target) else "predict")

    @property
    def has_eds(self) -> bool:
        return bool(self.eds)


@dataclass(frozen=True)
class CampaignConfig:
    name: str
    store: Path
    pixel_size_um: float
    images: tuple[ImageEntry, ...]
    classes: tuple[str, ...] = CLASSES
    ingest: IngestConfig = field(default_factory=IngestConfig)
    labelling: LabellingConfig = field(default_factory=LabellingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    source: Path | None = field(default=None, compare=False)
    """The YAML file this config was read from (not part of the YAML)."""

    def image(self, image_id: str) -> ImageEntry:
        for entry in self.images:
            if entry.id == image_id:
                return entry
        raise ConfigError(f"{self._where()}: no image with id `{image_id}` "
                          f"(ids: {', '.join(e.id for e in self.images)}).")

    def _where(self) -> str:
        return str(self.source) if self.source else "config"

    @property
    def model_name(self) -> str:
        return self.inference.model or self.training.name

    @classmethod
    def from_dict(cls, data: Any, *, base_dir: Path | None = None, source: Path | None = None,
                  check_files: bool = True) -> CampaignConfig:
        """Build and validate a config from plain data (as read from YAML)."""
        where = str(source) if source else "config"
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        try:
            return _build_campaign(data, base=base, where=where, source=source, check_files=check_files)
        except _FieldError as exc:
            raise ConfigError(f"{where}: `{exc.key}`: {exc.message}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-able data (absolute paths); ``from_dict(to_dict())`` gives an equal config."""
        out = _to_plain(self)
        out.pop("source", None)
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(path: str | Path, *, check_files: bool = True) -> CampaignConfig:
    """Read and validate a campaign config from a YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Expected a campaign config file at {path}. Got no such file.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return CampaignConfig.from_dict(data, base_dir=path.parent.resolve(), source=path, check_files=check_files)


# --- validation machinery -------------------------------------------------------------------------
class _FieldError(ConfigError):
    """A config value is invalid; ``from_dict`` prefixes the file name when re-raising it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"`{key}`: {message}")
        self.key, self.message = key, message


def _check(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise _FieldError(key, f"expected {expected}, got {got!r}")


def _switch(section: Any, name: str, key: str) -> None:
    """Check a :data:`Switch` field of a frozen section; a bool (Python, or YAML's on/off) becomes on/off."""
    value = getattr(section, name)
    if isinstance(value, bool):
        object.__setattr__(section, name, "on" if value else "off")
        return
    _check(value in typing.get_args(Switch), key, f"{_type_name(Switch)} (or true/false)", value)


def choices(section: type, name: str) -> tuple[str, ...]:
    """The values the Literal-typed option ``name`` of a section class allows (for argparse ``choices``)."""
    tp = typing.get_type_hints(section)[name]
    if typing.get_origin(tp) is not Literal:
        raise TypeError(f"Expected a Literal-typed option for {section.__name__}.{name}. Got {tp}.")
    return tuple(typing.get_args(tp))


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    if origin is dict:
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            Path: "a file path (string)"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (as written in the dataclasses above) and convert it."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except _FieldError:
                continue
        raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):
            return "on" if value else "off"  # YAML 1.1 reads on/off/yes/no as booleans
        if not isinstance(value, bool) and value in allowed:
            return value
        raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `sample: 1`
    elif tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
    else:  # pragma: no cover - a type this module does not use
        raise TypeError(tp)
    raise _FieldError(key, f"expected {_type_name(tp)}, got {_describe(value)}")


def _build_section(cls: type, data: Any, key: str) -> Any:
    """Build a flat section dataclass from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _FieldError(key, f"expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise _FieldError(f"{key}.{unknown[0]}", f"unknown key (known keys: {', '.join(sorted(fields))})")
    kwargs = {name: _coerce(value, hints[name], f"{key}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except _FieldError:
        raise
    except TypeError as exc:  # a required key is missing
        raise _FieldError(key, f"incomplete section: {exc}") from None


def _resolve(path: Path, base: Path, key: str, check_files: bool) -> Path:
    path = path.expanduser()
    full = path if path.is_absolute() else (base / path)
    if check_files and not full.is_file():
        raise _FieldError(key, f"expected an existing file, got {str(path)!r} (looked for {full})")
    return full


_IMAGE_KEYS = {f.name for f in dataclasses.fields(ImageEntry)}
_TOP_KEYS = {f.name for f in dataclasses.fields(CampaignConfig)} - {"source"}
_SECTIONS: dict[str, type] = {
    "ingest": IngestConfig, "labelling": LabellingConfig, "training": TrainingConfig,
    "inference": InferenceConfig, "cluster": ClusterConfig,
}


def _build_image(data: Any, key: str, base: Path, check_files: bool) -> ImageEntry:
    if not isinstance(data, Mapping):
        raise _FieldError(key, f"expected a mapping with at least `id` and `sem`, got {_describe(data)}")
    unknown = sorted(set(data) - _IMAGE_KEYS)
    if unknown:
        raise _FieldError(f"{key}.{unknown[0]}", f"unknown key (known keys: {', '.join(sorted(_IMAGE_KEYS))})")
    for required in ("id", "sem"):
        if data.get(required) in (None, ""):
            raise _FieldError(f"{key}.{required}", "missing required key")
    image_id = _coerce(data["id"], str, f"{key}.id")
    if not ID_PATTERN.match(image_id):
        raise _FieldError(f"{key}.id", f"expected only letters, digits, '_', '.', '-', got {image_id!r}")
    eds_raw = data.get("eds") or {}
    if not isinstance(eds_raw, Mapping):
        raise _FieldError(f"{key}.eds", f"expected a mapping element -> file, got {_describe(eds_raw)}")
    eds = {}
    for element, p in eds_raw.items():
        if not isinstance(element, str) or not re.match(r"^[A-Z][a-z]?$", element):
            raise _FieldError(f"{key}.eds", f"expected element symbols like Ni, O, Zr as keys, got {element!r}")
        eds[element] = _resolve(_coerce(p, Path, f"{key}.eds.{element}"), base, f"{key}.eds.{element}",
                                check_files)
    kwargs: dict[str, Any] = {"id": image_id, "eds": eds}
    kwargs["sem"] = _resolve(_coerce(data["sem"], Path, f"{key}.sem"), base, f"{key}.sem", check_files)
    for name in ("target", "truth", "scribbles"):
        if data.get(name) is not None:
            kwargs[name] = _resolve(_coerce(data[name], Path, f"{key}.{name}"), base, f"{key}.{name}",
                                    check_files)
    if data.get("sample") is not None:
        kwargs["sample"] = _coerce(data["sample"], str, f"{key}.sample")
    if data.get("oxidation_min") is not None:
        kwargs["oxidation_min"] = _coerce(data["oxidation_min"], float, f"{key}.oxidation_min")
        _check(kwargs["oxidation_min"] >= 0, f"{key}.oxidation_min", "a number >= 0", kwargs["oxidation_min"])
    if data.get("role") is not None:
        kwargs["role"] = _coerce(data["role"], Literal["train", "test", "predict"], f"{key}.role")
    return ImageEntry(**kwargs)


def _build_campaign(data: Any, *, base: Path, where: str, source: Path | None,
                    check_files: bool) -> CampaignConfig:
    if not isinstance(data, Mapping):
        raise _FieldError("<top level>", f"expected a mapping with name, store, pixel_size_um and images, "
                                         f"got {_describe(data)}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _FieldError(unknown[0], f"unknown key (known keys: {', '.join(sorted(_TOP_KEYS))})")
    for required in ("name", "store", "pixel_size_um", "images"):
        if data.get(required) is None:
            raise _FieldError(required, "missing required key")
    name = _coerce(data["name"], str, "name")
    store = _coerce(data["store"], Path, "store").expanduser()
    store = store if store.is_absolute() else base / store
    pixel = _coerce(data["pixel_size_um"], float, "pixel_size_um")
    _check(pixel > 0, "pixel_size_um", "a positive number (µm per pixel)", pixel)
    classes = _coerce(data.get("classes", list(CLASSES)), tuple[str, ...], "classes")
    _check(2 <= len(classes) <= 254 and len(set(classes)) == len(classes), "classes",
           "2..254 distinct class names", list(classes))
    raw_images = data["images"]
    if not isinstance(raw_images, list) or not raw_images:
        raise _FieldError("images", f"expected a non-empty list of images, got {_describe(raw_images)}")
    images: list[ImageEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_images):
        entry = _build_image(item, f"images[{i}]", base, check_files)
        if entry.id in seen:
            raise _FieldError(f"images[{i}].id", f"duplicate id {entry.id!r} (first used by images[{seen[entry.id]}])")
        seen[entry.id] = i
        images.append(entry)
    sections = {k: _build_section(cls, data.get(k), k) for k, cls in _SECTIONS.items()}
    return CampaignConfig(name=name, store=store, pixel_size_um=pixel, images=tuple(images),
                          classes=classes, source=source, **sections)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
