"""The config sections: one frozen, validated dataclass per pipeline stage — the only home of defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from semscale.config.validation import ID_PATTERN, Switch, _check, _switch
from semscale.errors import ConfigError

__all__ = ["PERTURBATIONS", "TRAINING_RECIPES", "Augment", "ClusterConfig", "InferenceConfig", "IngestConfig",
           "LabellingConfig", "ReportConfig", "RobustnessConfig", "StatsConfig", "TrainingConfig"]


@dataclass(frozen=True)
class IngestConfig:
    """How images enter the store."""

    chunk_size: int = 1024
    """Zarr chunk edge (px) of SEM and label arrays."""
    label_encoding: Literal["auto", "index", "grey"] = "auto"
    """How target/truth files encode classes: ``index`` (values 0..K-1, 255 = unlabelled), ``grey`` (evenly
    spaced grey levels, 0/85/170/255 for four classes) or ``auto`` (whichever fits; an error when both fit
    with different meanings, as for a file holding only 0 and 255)."""

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
class Augment:
    """On-the-fly augmentation settings; intensities in normalised units (image range ≈ 0..1)."""

    dihedral: bool = True
    """Random one of the 8 flips/rotations, identical on image and labels."""
    blur_prob: float = 0.3
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    """Gaussian blur σ range (px)."""
    contrast_prob: float = 0.5
    contrast: tuple[float, float] = (0.8, 1.25)
    """Contrast factor range, applied about the patch mean."""
    brightness_prob: float = 0.5
    brightness: tuple[float, float] = (-0.1, 0.1)
    """Additive brightness range."""
    noise_prob: float = 0.5
    noise_sigma: tuple[float, float] = (0.0, 0.03)
    """Gaussian σ range of the Gaussian–Poisson noise."""
    poisson_scale: float = 255.0
    """C in ``I' = Poisson(I·C)/C + N(0, σ)``."""

    def __post_init__(self) -> None:
        for name in ("blur_prob", "contrast_prob", "brightness_prob", "noise_prob"):
            _check(0 <= getattr(self, name) <= 1, f"training.augment.{name}", "a probability in [0, 1]",
                   getattr(self, name))
        for name in ("blur_sigma", "contrast", "brightness", "noise_sigma"):
            lo_hi = getattr(self, name)
            _check(len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1], f"training.augment.{name}", "a range [low, high]",
                   list(lo_hi))
        _check(self.poisson_scale > 0, "training.augment.poisson_scale", "a positive number", self.poisson_scale)

    @classmethod
    def none(cls) -> Augment:
        return cls(dihedral=False, blur_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, noise_prob=0.0)

    @classmethod
    def geometric_only(cls) -> Augment:
        return cls(blur_prob=0.0, contrast_prob=0.0, brightness_prob=0.0, noise_prob=0.0)

    @classmethod
    def coerce(cls, value: bool | Mapping[str, Any] | Augment | None) -> Augment:
        """``True`` → defaults, ``False``/``None`` → none, a dict → defaults updated by its keys."""
        if isinstance(value, Augment):
            return value
        if value is None or value is False:
            return cls.none()
        if value is True:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ConfigError(f"Expected augmentation keys among {sorted(names)} for `training.augment`. "
                              f"Got {unknown}.")
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


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
    augment: bool | Augment = True
    """Dihedral flips/rotations, blur, contrast, brightness and Gaussian–Poisson noise on the fly: true (the
    :class:`Augment` defaults), false (none), or a mapping of :class:`Augment` keys over its defaults."""
    ensemble: int = 1
    """Number of ensemble members (member k trains with seed ``seed + k``)."""
    split: Literal["tiles", "images"] = "tiles"
    test_tiles_fraction: float = 140 / 1232
    """Share of the P×P tile grid held out as test tiles (the paper: 140 of 1232)."""
    seed: int = 0
    mixed_precision: Switch = "auto"
    """Mixed-precision compute (float32 weights): ``auto`` on a GPU, ``on``, ``off`` (YAML true/false
    accepted). float16 with loss scaling on a GPU, bfloat16 on a CPU (1.4-1.5× the float32 steps/s on a CPU
    with AVX512-BF16; slower where the CPU lacks bfloat16 instructions)."""
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
    recipe: Literal["paper", "cpu"] = "paper"
    """Named defaults (:data:`TRAINING_RECIPES`) for the keys not given beside it: ``paper`` (the published
    schedule; these field defaults) or ``cpu`` (what the generalisation work found best on two CPU cores).
    Applied when the section is built from a mapping (YAML) or by :meth:`from_recipe`."""
    budget_min: float | None = None
    """Wall-clock budget (min) of one member's training epochs: training stops before an epoch would run past
    it, keeping the best checkpoint (``epochs`` stays the upper limit); null: no budget."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """``cosine``: the learning rate falls from ``learning_rate`` to 2 % of it over the run's progress, the
    larger of epoch / ``epochs`` and elapsed / ``budget_min``; ``constant``: Adam at ``learning_rate``."""
    patience: int | None = None
    """Stop after this many epochs without a better ``monitor`` value; null: never stop early."""
    synthetic_fraction: float = 0.0
    """Share of each batch drawn from domain-randomised simulated images with their exact truth
    (:mod:`semscale.training.synthetic`), so the network keeps seeing exact labels while it learns the
    campaign's targets (rounded to whole windows, leaving at least one of the campaign's); 0: the campaign's
    windows only."""
    synthetic_images: int = 32
    """Simulated images (``patch_size`` × 4 px square, in memory) behind ``synthetic_fraction``."""
    synthetic_levels: Literal["calibration", "campaign"] = "calibration"
    """Phase grey levels of those simulated images: ``calibration`` (randomised around the simulator's
    calibration) or ``campaign`` (randomised around the levels and per-grain contrast measured on this
    campaign's training images and their ``label_source`` labels, :func:`semscale.training.synthetic.campaign_levels`)."""
    synthetic_zoom: tuple[float, float] = (1.0, 1.0)
    """Each simulated window is resampled by a factor drawn log-uniformly in this range (< 1: grains, NiO
    rims and the SEM's blur look smaller in px, as at a lower magnification; > 1: larger), so the network
    does not learn one imaging scale; ``[1, 1]``: as simulated."""
    class_offsets: Literal["none", "synthetic"] = "none"
    """``synthetic``: after training, offsets of the network's class log-probabilities are fitted on
    ``calibration_images`` further simulated images with exact truth (drawn like the ``synthetic_levels``
    windows, none of them trained on) so that the labels' class shares there equal the truth's
    (:func:`semscale.kernels.calibration.share_offsets`), and added to the output layer's bias: the saved
    member carries them, its sidecar records them and the shares before and after. ``none``: as trained."""
    calibration_images: int = 16
    """Simulated images (``patch_size`` × 4 px square) behind ``class_offsets: synthetic``."""
    init_weights: str | None = None
    """Start from these weights instead of random ones: ``synthetic`` (shipped, pretrained on
    domain-randomised simulated images; :mod:`semscale.training.pretrain`) or a ``.keras`` member file of
    the same architecture; null: He-normal initialisation."""

    @classmethod
    def from_recipe(cls, recipe: str = "paper", **options: Any) -> TrainingConfig:
        """The section of recipe ``recipe`` (:data:`TRAINING_RECIPES`) with ``options`` set over it."""
        _check(recipe in TRAINING_RECIPES, "training.recipe", "one of " + ", ".join(map(repr, TRAINING_RECIPES)),
               recipe)
        return cls(**{**TRAINING_RECIPES[recipe], **options, "recipe": recipe})

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
                                     ("n_test_tiles", 0, True), ("patience", 1, True),
                                     ("synthetic_images", 1, False), ("calibration_images", 1, False)):
            value = getattr(self, key)
            _check((optional and value is None) or (value is not None and value >= least), f"training.{key}",
                   f"an integer >= {least}" + (" or null" if optional else ""), value)
        _switch(self, "mixed_precision", "training.mixed_precision")
        for key, choices in (("split", ("tiles", "images")), ("mixed_precision", ("auto", "on", "off")),
                             ("monitor", ("val_mean_iou", "val_accuracy", "loss")),
                             ("jit_compile", (True, False, "auto")), ("verbose", (0, 1, 2)),
                             ("recipe", tuple(TRAINING_RECIPES)), ("lr_schedule", ("constant", "cosine")),
                             ("synthetic_levels", ("calibration", "campaign")),
                             ("class_offsets", ("none", "synthetic"))):
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
        _check(0 <= self.synthetic_fraction < 1, "training.synthetic_fraction", "a number in [0, 1)",
               self.synthetic_fraction)
        lo_hi = tuple(self.synthetic_zoom)
        _check(len(lo_hi) == 2 and 0.25 <= lo_hi[0] <= lo_hi[1] <= 4, "training.synthetic_zoom",
               "a range [low, high] within [0.25, 4]", list(lo_hi))
        _check(self.budget_min is None or self.budget_min > 0, "training.budget_min",
               "a positive number of minutes or null", self.budget_min)


TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {
        "filters": (16, 32, 64, 128), "dropout": (0.0, 0.05, 0.1, 0.1), "patch_size": 128, "batch_size": 8,
        "epochs": 1000, "steps_per_epoch": 50, "learning_rate": 2e-3, "lr_schedule": "cosine",
        "budget_min": 30.0, "mixed_precision": "on", "test_tiles_fraction": 0.1,
        "synthetic_fraction": 0.9, "synthetic_images": 64, "synthetic_levels": "campaign",
        "class_offsets": "synthetic",
    },
}
"""Named sets of training defaults (``training.recipe``). ``paper``: the published method (a GPU's).
``cpu``: the generalisation protocol's best on two CPU cores (``benchmarks/README.md``): a 4-level U-Net on
128² windows, bfloat16 compute, a cosine schedule over a 30-min budget, 7 of the 8 windows of every batch
simulated with exact truth at the phase levels measured on the campaign's targets, and class offsets fitted
on further such images after training."""


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
    halo: int | None = None
    """Context (px) on each side of a tile in ``tile`` mode, rounded up to the network's pooling multiple;
    null: the receptive field's one-sided extent, so every tile's centre equals the whole image's output
    exactly (a larger setting is the same). A smaller halo evaluates fewer pixels per output pixel and agrees
    less; it needs block edges on multiples of ``tile_size``. For the paper U-Net (exact 112 px) 16 px keeps 99.96 % of the labels
    (``benchmarks/README.md``, tile halo sweep)."""
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
        if self.halo is not None:
            _check(self.halo >= 0, "inference.halo", "an integer >= 0 or null (exact)", self.halo)
        _check(self.sigma_fraction > 0, "inference.sigma_fraction", "a positive number", self.sigma_fraction)
        _check(self.batch_size >= 1, "inference.batch_size", "an integer >= 1", self.batch_size)
        if self.block_size is not None:
            _check(self.block_size >= 16, "inference.block_size", "an integer >= 16 or null", self.block_size)
        _check(self.retries >= 0, "inference.retries", "an integer >= 0", self.retries)


@dataclass(frozen=True)
class StatsConfig:
    """Microstructure statistics of every labelled image (``semscale stats``), blockwise and exact."""

    tile_um: float = 10.0
    """Edge (µm) of the bootstrap tiles: five mean grain diameters of a Ni/YSZ cermet (grains of 1–3 µm),
    so neighbouring tiles are close to independent; at least 16 px."""
    bootstrap: int = 1000
    """Bootstrap draws for the intervals (0: none)."""
    confidence: float = 0.95
    """Coverage of the intervals."""
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    """Quantiles of the equivalent-disk diameter of each phase's components (d10, d50, d90)."""
    min_component_px: int = 4
    """Components smaller than this (px) are noise for the size distribution (they stay in every other
    quantity)."""
    tpb_phases: tuple[str, ...] = ("Ni", "YSZ", "pore")
    """The three phases whose meeting points are the electrochemically active triple-phase boundary."""
    oxidation: tuple[str, ...] = ("NiO", "Ni")
    """(oxidised, metal) phases of the oxidation degree ``oxidised / (oxidised + metal)``."""
    seed: int = 0
    """Seed of the bootstrap draws."""
    netcdf: bool = False
    """Also write ``report/stats.nc`` (netCDF-4, needs h5netcdf or netCDF4; else the scipy netCDF-3 writer)."""

    def __post_init__(self) -> None:
        _check(self.tile_um > 0, "stats.tile_um", "a positive number (µm)", self.tile_um)
        _check(self.bootstrap >= 0, "stats.bootstrap", "an integer >= 0", self.bootstrap)
        _check(0 < self.confidence < 1, "stats.confidence", "a number between 0 and 1", self.confidence)
        _check(len(self.quantiles) > 0 and all(0 <= q <= 1 for q in self.quantiles), "stats.quantiles",
               "a non-empty list of numbers in 0..1", list(self.quantiles))
        _check(self.min_component_px >= 1, "stats.min_component_px", "an integer >= 1", self.min_component_px)
        _check(len(self.tpb_phases) == 3 and len(set(self.tpb_phases)) == 3, "stats.tpb_phases",
               "three distinct phase names", list(self.tpb_phases))
        _check(len(self.oxidation) == 2 and len(set(self.oxidation)) == 2, "stats.oxidation",
               "two distinct phase names (oxidised, metal)", list(self.oxidation))

    def tile_px(self, pixel_size_um: float) -> int:
        """The bootstrap tile edge in pixels of ``pixel_size_um``."""
        return max(16, round(self.tile_um / pixel_size_um))


@dataclass(frozen=True)
class RobustnessConfig:
    """Accuracy of a model's segmentation as the SEM image is degraded (``semscale robustness``).

    Each level perturbs every image blockwise (the result stays an integer image of the SEM's dtype, as a
    detector records it), normalises it as ingest would and segments it with the campaign's inference
    settings; labels are scored against truth where the image has it, else its target.
    """

    enabled: bool = True
    """Run the sweep as a stage of ``semscale run`` (before the report)."""
    blur_sigma: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0)
    """Gaussian blur σ (px)."""
    brightness: tuple[float, ...] = (0.6, 0.8, 1.0, 1.2, 1.4)
    """Factor on the grey values."""
    noise_sigma: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1)
    """σ of the Gaussian part of Gaussian–Poisson noise: ``I' = Poisson(I·C)/C + N(0, σ)``, ``C`` =
    :attr:`photons`, ``I`` in 0..1 (grey value / the dtype's maximum)."""
    photons: float = 255.0
    """``C`` of the Poisson part (counts at full scale); 0: no Poisson part."""
    magnification: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
    """Resampling ratio (bilinear, anti-aliased when shrinking; labels nearest)."""
    crop: int | None = None
    """Score a central crop of at most this edge (px) per image; null: the whole image."""
    seed: int = 0
    """Seed of the noise (one stream per block of the image's chunk grid)."""

    def __post_init__(self) -> None:
        for name, ok, what in (("blur_sigma", lambda v: v >= 0, "numbers >= 0"),
                               ("brightness", lambda v: v > 0, "positive numbers"),
                               ("noise_sigma", lambda v: v >= 0, "numbers >= 0"),
                               ("magnification", lambda v: 0.1 <= v <= 10, "numbers in 0.1..10")):
            values = getattr(self, name)
            _check(all(ok(v) for v in values), f"robustness.{name}", f"a list of {what}", list(values))
        _check(self.photons >= 0, "robustness.photons", "a number >= 0", self.photons)
        if self.crop is not None:
            _check(self.crop >= 32, "robustness.crop", "an integer >= 32 or null", self.crop)

    def cases(self) -> list[tuple[str, float]]:
        """Every (perturbation, value) of the sweep, in order."""
        return [(kind, float(v)) for kind in PERTURBATIONS for v in getattr(self, kind)]


PERTURBATIONS = ("blur_sigma", "brightness", "noise_sigma", "magnification")
"""The perturbations of a robustness sweep, as named in :class:`RobustnessConfig`."""


@dataclass(frozen=True)
class ReportConfig:
    """The campaign report (``semscale report``): ``report/index.html`` and its PNG figures."""

    enabled: bool = True
    """Write the report as the last stage of ``semscale run``."""
    overlay_px: int = 512
    """Edge (px) of the central crop shown per image in the overlay panels (full resolution)."""
    overlay_images: int = 12
    """At most this many images get an overlay panel (the first ones by oxidation time)."""
    violin_pixels: int = 20000
    """Pixels sampled per phase and image for the grey-level violins."""
    timing_px: int = 512
    """Edge (px) of the crop segmented in each mode to measure segmentation time per image."""
    dpi: int = 110
    """Resolution of the PNG figures."""

    def __post_init__(self) -> None:
        _check(self.overlay_px >= 32, "report.overlay_px", "an integer >= 32", self.overlay_px)
        _check(self.overlay_images >= 0, "report.overlay_images", "an integer >= 0", self.overlay_images)
        _check(self.violin_pixels >= 100, "report.violin_pixels", "an integer >= 100", self.violin_pixels)
        _check(self.timing_px >= 64, "report.timing_px", "an integer >= 64", self.timing_px)
        _check(30 <= self.dpi <= 600, "report.dpi", "an integer in 30..600", self.dpi)


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


