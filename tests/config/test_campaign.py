"""Campaign config: every error kind names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from semscale.config import (
    CampaignConfig,
    ClusterConfig,
    InferenceConfig,
    TrainingConfig,
    choices,
    load_config,
)
from semscale.errors import ConfigError


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    img = np.zeros((64, 48), np.uint8)
    for name in ("a_sem", "a_Ni", "a_O", "a_Zr", "b_sem", "a_target"):
        tifffile.imwrite(data / f"{name}.tif", img)
    return tmp_path


def _base() -> dict:
    return {
        "name": "series",
        "store": "out/c.zarr",
        "pixel_size_um": 0.04458,
        "classes": ["pore", "NiO", "Ni", "YSZ"],
        "images": [
            {"id": "t000_a", "sem": "data/a_sem.tif", "sample": "A", "oxidation_min": 0,
             "eds": {"Ni": "data/a_Ni.tif", "O": "data/a_O.tif", "Zr": "data/a_Zr.tif"},
             "target": "data/a_target.tif"},
            {"id": "t020_b", "sem": "data/b_sem.tif", "sample": "B", "oxidation_min": 20, "role": "predict"},
        ],
    }


def _write(campaign_dir: Path, data: dict) -> Path:
    path = campaign_dir / "campaign.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_valid_config_resolves_paths_and_defaults(campaign_dir: Path) -> None:
    cfg = load_config(_write(campaign_dir, _base()))
    assert cfg.store == campaign_dir / "out/c.zarr"
    a, b = cfg.images
    assert a.sem == campaign_dir / "data/a_sem.tif" and a.sem.is_file()
    assert a.eds["Zr"] == campaign_dir / "data/a_Zr.tif"
    assert a.role == "train" and b.role == "predict"  # default role from EDS presence
    assert a.oxidation_min == 0.0 and isinstance(a.oxidation_min, float)
    assert cfg.training.batch_size == 32 and cfg.training.learning_rate == pytest.approx(1e-3)
    assert cfg.model_name == "unet"


def test_round_trip_to_dict(campaign_dir: Path) -> None:
    data = _base()
    data["training"] = {"epochs": 3, "filters": [4, 8, 16], "dropout": [0, 0, 0.1], "patch_size": 64}
    cfg = load_config(_write(campaign_dir, data))
    again = CampaignConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert again.training.filters == (4, 8, 16)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d.update(colour="red"), r"campaign\.yaml: `colour`: unknown key"),
        (lambda d: d["images"][0].update(exposure=3), r"`images\[0\]\.exposure`: unknown key"),
        (lambda d: d["images"][1].update(oxidation_min="soon"),
         r"`images\[1\]\.oxidation_min`: expected a number, got 'soon' \(str\)"),
        (lambda d: d.update(pixel_size_um="small"), r"`pixel_size_um`: expected a number, got 'small'"),
        (lambda d: d["images"][1].update(id="t000_a"),
         r"`images\[1\]\.id`: duplicate id 't000_a' \(first used by images\[0\]\)"),
        (lambda d: d["images"][1].update(sem="data/missing.tif"),
         r"`images\[1\]\.sem`: expected an existing file, got 'data/missing.tif'"),
        (lambda d: d["images"][0].update(id="t 0/a"),
         r"`images\[0\]\.id`: expected only letters, digits, '_', '\.', '-', not starting with '\.', got 't 0/a'"),
        (lambda d: d.pop("store"), r"`store`: missing required key"),
        (lambda d: d["images"][0].pop("sem"), r"`images\[0\]\.sem`: missing required key"),
        (lambda d: d["images"][1].update(role="validate"),
         r"`images\[1\]\.role`: expected one of 'train', 'test', 'predict', got 'validate'"),
        (lambda d: d.update(training={"batch_size": "big"}),
         r"`training\.batch_size`: expected an integer, got 'big' \(str\)"),
        (lambda d: d.update(training={"learning_rat": 0.1}), r"`training\.learning_rat`: unknown key"),
        (lambda d: d.update(training={"patch_size": 100}),
         r"`training\.patch_size`: expected a multiple of 16"),
        (lambda d: d.update(inference={"mode": "blend"}),
         r"`inference\.mode`: expected one of 'average', 'gaussian', 'tile', got 'blend'"),
        (lambda d: d["images"][0].update(eds={"nickel": "data/a_Ni.tif"}),
         r"`images\[0\]\.eds`: expected element symbols"),
        (lambda d: d.update(classes=["pore", "pore"]), r"`classes`: expected 2\.\.254 distinct class names"),
        (lambda d: d.update(images=[]), r"`images`: expected a non-empty list"),
    ],
    ids=["unknown-top-key", "unknown-image-key", "wrong-type", "wrong-type-top", "duplicate-id",
         "missing-file", "bad-id-characters", "missing-required", "missing-required-image", "bad-role",
         "wrong-type-section", "unknown-section-key", "invalid-value", "bad-literal", "bad-element",
         "duplicate-classes", "no-images"],
)
def test_config_errors_name_file_key_and_expectation(campaign_dir: Path, mutate, pattern: str) -> None:
    data = _base()
    mutate(data)
    path = _write(campaign_dir, data)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_config_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Expected a campaign config file at .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2:1: expected valid YAML. Got while parsing a flow sequence "):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"expected a mapping with name, store and images \(pixel_size_um optional\)"):
        load_config(top)


def test_section_validates_when_built_directly() -> None:
    with pytest.raises(ConfigError, match=r"`training\.dropout`: expected 3 rates"):
        TrainingConfig(filters=(4, 8, 16))


def test_shipped_example_config_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "configs" / "oxidation-series.yaml"
    cfg = load_config(path, check_files=False)
    assert len(cfg.images) == 8 and cfg.training.ensemble == 10
    assert [e.role for e in cfg.images].count("train") == 3
    assert cfg.image("t030_b").role == "test"


@pytest.mark.parametrize(("text", "expected"), [
    ("off", "off"), ("on", "on"), ("no", "off"), ("yes", "on"), ("false", "off"), ("true", "on"),
    ("auto", "auto"), ("'off'", "off"),
])
def test_switches_accept_yaml_booleans(campaign_dir: Path, text: str, expected: str) -> None:
    """YAML 1.1 reads `gpu: off` as false and `on` as true: both switches take them as off/on."""
    path = _write(campaign_dir, _base())
    with path.open("a") as f:
        f.write(f"cluster:\n  gpu: {text}\ntraining:\n  mixed_precision: {text}\n")
    cfg = load_config(path)
    assert cfg.cluster.gpu == expected and cfg.training.mixed_precision == expected
    again = CampaignConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again.cluster.gpu == expected  # the stored config reads back the same


def test_switch_errors_name_the_key(campaign_dir: Path) -> None:
    data = _base()
    data["cluster"] = {"gpu": "maybe"}
    with pytest.raises(ConfigError, match=r"`cluster\.gpu`: expected one of 'auto', 'on', 'off', got 'maybe'"):
        load_config(_write(campaign_dir, data))
    data["cluster"] = {"gpu": 1}
    with pytest.raises(ConfigError, match=r"`cluster\.gpu`: expected one of"):
        load_config(_write(campaign_dir, data))
    with pytest.raises(ConfigError, match=r"`training\.mixed_precision`"):
        TrainingConfig(mixed_precision="fp16")  # type: ignore[arg-type]
    assert ClusterConfig(gpu=False).gpu == "off" and TrainingConfig(mixed_precision=True).mixed_precision == "on"  # type: ignore[arg-type]


def test_cluster_section_defaults_and_checks(campaign_dir: Path) -> None:
    cfg = load_config(_write(campaign_dir, _base()))
    assert cfg.cluster == ClusterConfig()
    assert cfg.cluster.dashboard_address == "127.0.0.1:8787" and cfg.cluster.gpu == "auto"
    data = _base()
    data["cluster"] = {"dashboard_address": None, "n_workers": 2, "memory_limit": "4GB"}
    cfg = load_config(_write(campaign_dir, data))
    assert cfg.cluster.dashboard_address is None and cfg.cluster.n_workers == 2
    for bad, key in (({"dashboard_address": "localhost"}, "dashboard_address"),
                     ({"dashboard_address": "127.0.0.1:http"}, "dashboard_address"),
                     ({"n_workers": 0}, "n_workers"), ({"threads_per_worker": -1}, "threads_per_worker")):
        data["cluster"] = bad
        with pytest.raises(ConfigError, match=rf"`cluster\.{key}`: expected"):
            load_config(_write(campaign_dir, data))
    assert ClusterConfig(dashboard_address=":8787").dashboard_address == ":8787"


def test_choices_come_from_the_literal_types() -> None:
    assert choices(ClusterConfig, "gpu") == ("auto", "on", "off")
    assert choices(InferenceConfig, "mode") == ("average", "gaussian", "tile")
    assert choices(TrainingConfig, "split") == ("tiles", "images")
    with pytest.raises(TypeError, match="Literal"):
        choices(TrainingConfig, "epochs")


def test_training_recipe_sets_defaults_under_the_keys_given(campaign_dir: Path) -> None:
    from semscale.config.sections import TRAINING_RECIPES

    data = _base()
    data["training"] = {"recipe": "cpu", "budget_min": 12, "batch_size": 16}
    cfg = load_config(_write(campaign_dir, data))
    cpu = TRAINING_RECIPES["cpu"]
    assert cfg.training.recipe == "cpu" and cfg.training.budget_min == 12.0 and cfg.training.batch_size == 16
    for key, value in cpu.items():
        if key not in ("budget_min", "batch_size"):
            assert getattr(cfg.training, key) == value, key
    assert cfg.training == TrainingConfig.from_recipe("cpu", budget_min=12.0, batch_size=16)
    # the stored config (every key written out) reads back the same section
    assert CampaignConfig.from_dict(yaml.safe_load(cfg.to_yaml())).training == cfg.training
    # "paper" is the field defaults; an unknown recipe names the key and the choices
    data["training"] = {"recipe": "paper"}
    assert load_config(_write(campaign_dir, data)).training == TrainingConfig()
    data["training"] = {"recipe": "gpu"}
    with pytest.raises(ConfigError, match=r"`training\.recipe`: expected one of 'paper', 'cpu', got 'gpu'"):
        load_config(_write(campaign_dir, data))
    data["training"] = {"recipe": "cpu", "budget_min": 0}
    with pytest.raises(ConfigError, match=r"`training\.budget_min`"):
        load_config(_write(campaign_dir, data))


def test_augment_is_a_switch_or_a_mapping_over_its_defaults(campaign_dir: Path) -> None:
    from semscale.config.sections import Augment

    data = _base()
    data["training"] = {"augment": {"brightness": [-0.03, 0.03], "contrast_prob": 0}}
    cfg = load_config(_write(campaign_dir, data))
    assert cfg.training.augment == Augment(brightness=(-0.03, 0.03), contrast_prob=0.0)
    assert CampaignConfig.from_dict(yaml.safe_load(cfg.to_yaml())).training == cfg.training
    data["training"] = {"augment": False}
    assert Augment.coerce(load_config(_write(campaign_dir, data)).training.augment) == Augment.none()
    for bad, pattern in (({"brightnes": [0, 1]}, r"`training\.augment\.brightnes`: unknown key"),
                         ({"brightness": [0.1, -0.1]}, r"`training\.augment\.brightness`: expected a range"),
                         ({"blur_prob": 2}, r"`training\.augment\.blur_prob`: expected a probability"),
                         (3, r"`training\.augment`: expected true/false or a mapping, got 3")):
        data["training"] = {"augment": bad}
        with pytest.raises(ConfigError, match=pattern):
            load_config(_write(campaign_dir, data))

def test_pixel_size_is_optional_and_positive_when_given(campaign_dir: Path) -> None:
    data = _base()
    del data["pixel_size_um"]
    assert load_config(_write(campaign_dir, data)).pixel_size_um is None  # read from the SEM tags at ingest
    data["pixel_size_um"] = 0
    with pytest.raises(ConfigError, match=r"`pixel_size_um`: expected a positive number \(µm per pixel\), got 0"):
        load_config(_write(campaign_dir, data))


@pytest.mark.parametrize(("section", "value", "message"), [
    ("robustness", {"blur_sigma": [-1]}, r"`robustness\.blur_sigma`: expected a list of numbers >= 0"),
    ("robustness", {"magnification": [0.01]}, r"`robustness\.magnification`: expected a list of numbers in 0\.1\.\.10"),
    ("robustness", {"crop": 8}, r"`robustness\.crop`: expected an integer >= 32 or null"),
    ("robustness", {"noise": [0.1]}, r"`robustness\.noise`: unknown key"),
    ("report", {"dpi": 5}, r"`report\.dpi`: expected an integer in 30\.\.600"),
    ("report", {"overlay_px": "big"}, r"`report\.overlay_px`"),
])
def test_robustness_and_report_sections_name_the_bad_key(campaign_dir: Path, section: str, value: dict,
                                                         message: str) -> None:
    path = _write(campaign_dir, {**_base(), section: value})
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_robustness_cases_follow_the_config_order() -> None:
    from semscale.config import RobustnessConfig

    cfg = RobustnessConfig(blur_sigma=(0, 2), brightness=(), noise_sigma=(0.1,), magnification=(0.5,))
    assert cfg.cases() == [("blur_sigma", 0.0), ("blur_sigma", 2.0), ("noise_sigma", 0.1), ("magnification", 0.5)]
