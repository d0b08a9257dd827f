"""One home for every option: each section's defaults are the only defaults, and stages take sections whole."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from semscale.config import (
    CampaignConfig,
    ClusterConfig,
    InferenceConfig,
    IngestConfig,
    LabellingConfig,
    TrainingConfig,
)
from semscale.errors import ConfigError

SECTIONS = (IngestConfig, LabellingConfig, TrainingConfig, InferenceConfig, ClusterConfig)


def _stage_functions():
    from semscale.inference import predict, predict_to_store, segment_array
    from semscale.io.ingest import ingest_image
    from semscale.labelling import label_store
    from semscale.runtime.cluster import get_client, plan_cluster
    from semscale.training.ensemble import train_ensemble
    from semscale.training.fit import train_member

    return {ingest_image: IngestConfig, label_store: LabellingConfig, train_member: TrainingConfig,
            train_ensemble: TrainingConfig, predict_to_store: InferenceConfig, predict: InferenceConfig,
            segment_array: InferenceConfig, get_client: ClusterConfig, plan_cluster: ClusterConfig}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.__name__)
def test_every_option_has_a_default_and_sections_are_frozen(section) -> None:
    cfg = section()
    for f in dataclasses.fields(section):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.__setattr__(dataclasses.fields(section)[0].name, None)


def test_stages_take_their_section_and_redeclare_none_of_its_options() -> None:
    for fn, section in _stage_functions().items():
        params = inspect.signature(fn).parameters
        assert any(p.annotation in (section.__name__, section, f"{section.__name__} | None") for p in
                   params.values()), f"{fn.__qualname__} takes no {section.__name__}"
        options = {f.name for f in dataclasses.fields(section)}
        again = sorted(options & {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY})
        assert not again, f"{fn.__qualname__} re-declares {section.__name__} options {again}"


def test_overrides_build_validated_sections() -> None:
    cfg = dataclasses.replace(TrainingConfig(), epochs=3)
    assert cfg.epochs == 3 and TrainingConfig().epochs == 250
    with pytest.raises(ConfigError, match="training.epochs"):
        dataclasses.replace(TrainingConfig(), epochs=0)
    with pytest.raises(ConfigError, match="inference.stride"):
        dataclasses.replace(InferenceConfig(), stride=0)


def test_campaign_defaults_are_the_section_defaults(tmp_path) -> None:
    (tmp_path / "a.npy").write_bytes(b"")
    cfg = CampaignConfig.from_dict({"name": "c", "store": "c.zarr", "pixel_size_um": 0.05,
                                    "images": [{"id": "a", "sem": "a.npy"}]}, base_dir=tmp_path)
    assert (cfg.ingest, cfg.labelling, cfg.training, cfg.inference, cfg.cluster) == tuple(s() for s in SECTIONS)
    assert CampaignConfig.from_dict(cfg.to_dict(), base_dir=tmp_path) == cfg
