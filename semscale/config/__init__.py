"""Campaign configuration: typed, validated, loaded from YAML.

A campaign config names the store, the phase classes, the pixel size and every image with its EDS maps and
labels (the ``images:`` contract of the design notes), plus one optional section per pipeline stage
(``ingest``, ``labelling``, ``training``, ``inference``, ``stats``, ``robustness``, ``report``, ``cluster``). Every section is a frozen dataclass
that validates itself when built; unknown keys, wrong types, duplicate ids, bad id characters and missing
files raise :class:`~semscale.errors.ConfigError` naming the file, the key, what was expected and what was
found. Relative paths resolve against the config file's folder. ``to_dict()`` round-trips to YAML-able data
and is stored in the campaign store's attrs, so every result says how it was made.
"""

from semscale.config.campaign import CampaignConfig, ImageEntry, load_config
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
from semscale.config.validation import Switch, choices

__all__ = [
    "CampaignConfig",
    "ClusterConfig",
    "ImageEntry",
    "InferenceConfig",
    "IngestConfig",
    "LabellingConfig",
    "ReportConfig",
    "RobustnessConfig",
    "StatsConfig",
    "Switch",
    "TrainingConfig",
    "choices",
    "load_config",
]
