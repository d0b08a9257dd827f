"""The campaign config: store, classes, pixel size, images, and one section per stage; built from YAML."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from semscale import CLASSES, EDS_ELEMENTS
from semscale.config.sections import (
    ClusterConfig,
    InferenceConfig,
    IngestConfig,
    LabellingConfig,
    ReportConfig,
    RobustnessConfig,
    StatsConfig,
    TrainingConfig,
)
from semscale.config.validation import (
    ID_PATTERN,
    _build_section,
    _check,
    _coerce,
    _describe,
    _FieldError,
    _resolve,
)
from semscale.errors import ConfigError
from semscale.store.location import PATH_TYPES, StorePath, store_path

__all__ = ["CampaignConfig", "ImageEntry", "load_config"]


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
    page: int | None = None
    """The page (0-based) of a multi-page SEM TIFF to read; such files are refused without it."""

    def __post_init__(self) -> None:
        if self.role is None:
            object.__setattr__(self, "role", "train" if (self.eds or self.target) else "predict")

    @property
    def has_eds(self) -> bool:
        return bool(self.eds)


@dataclass(frozen=True)
class CampaignConfig:
    name: str
    store: StorePath
    """A local folder, or an fsspec URL (``s3://bucket/campaign.zarr``) kept as given."""
    pixel_size_um: float | None
    """µm per SEM pixel; ``None``: read from the SEM TIFFs' own tags at ingest (they must agree)."""
    images: tuple[ImageEntry, ...]
    classes: tuple[str, ...] = CLASSES
    ingest: IngestConfig = field(default_factory=IngestConfig)
    labelling: LabellingConfig = field(default_factory=LabellingConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
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
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        raise ConfigError(f"{where}: expected valid YAML. Got {problem or str(exc).splitlines()[0]}; fix the "
                          "file at that line and column.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: expected a UTF-8 text file. Got {exc.reason} at byte {exc.start}.") from None
    return CampaignConfig.from_dict(data, base_dir=path.parent.resolve(), source=path, check_files=check_files)


_IMAGE_KEYS = {f.name for f in dataclasses.fields(ImageEntry)}
_TOP_KEYS = {f.name for f in dataclasses.fields(CampaignConfig)} - {"source"}
_SECTIONS: dict[str, type] = {
    "ingest": IngestConfig, "labelling": LabellingConfig, "training": TrainingConfig,
    "inference": InferenceConfig, "stats": StatsConfig, "robustness": RobustnessConfig, "report": ReportConfig,
    "cluster": ClusterConfig,
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
    if not ID_PATTERN.match(image_id) or image_id.startswith("."):
        raise _FieldError(f"{key}.id", "expected only letters, digits, '_', '.', '-', not starting with '.', "
                                       f"got {image_id!r}")
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
    if data.get("page") is not None:
        kwargs["page"] = _coerce(data["page"], int, f"{key}.page")
        _check(kwargs["page"] >= 0, f"{key}.page", "an integer >= 0", kwargs["page"])
    missing = [el for el in EDS_ELEMENTS if el not in eds]
    if eds and kwargs.get("target") is None and missing:
        raise _FieldError(f"{key}.eds", f"expected maps of {', '.join(EDS_ELEMENTS)} (the EDS-guided labelling "
                                        f"needs all of them), got {', '.join(sorted(eds))} (missing "
                                        f"{', '.join(missing)}); add the missing map(s) or give `target:`")
    return ImageEntry(**kwargs)


def _build_campaign(data: Any, *, base: Path, where: str, source: Path | None,
                    check_files: bool) -> CampaignConfig:
    if not isinstance(data, Mapping):
        raise _FieldError("<top level>", f"expected a mapping with name, store and images (pixel_size_um optional), "
                                         f"got {_describe(data)}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _FieldError(unknown[0], f"unknown key (known keys: {', '.join(sorted(_TOP_KEYS))})")
    for required in ("name", "store", "images"):
        if data.get(required) is None:
            raise _FieldError(required, "missing required key")
    name = _coerce(data["name"], str, "name")
    raw_store = _coerce(data["store"], str, "store")
    store = store_path(raw_store if "://" in raw_store or Path(raw_store).expanduser().is_absolute()
                       else base / raw_store)
    pixel = None
    if data.get("pixel_size_um") is not None:
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
    if isinstance(obj, PATH_TYPES):
        return str(obj)
    return obj
