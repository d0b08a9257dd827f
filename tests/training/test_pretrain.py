"""Tests of semscale.training.pretrain: synthetic pretraining on exact truth, and training that starts from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semscale.config import TrainingConfig
from semscale.errors import ConfigError, ModelError
from semscale.training.pretrain import SHIPPED, init_weights_path

TINY = {
    "patch_size": 32, "batch_size": 4, "filters": (4, 8, 16), "dropout": (0.0, 0.0, 0.0), "epochs": 2,
    "steps_per_epoch": 2, "test_tiles_fraction": 0.2, "workers": 1,
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from semscale.training.pretrain import pretrain_synthetic

    tmp = tmp_path_factory.mktemp("pretrain")
    out = tmp / "weights" / "pre.keras"
    cfg = TrainingConfig(name="pre", synthetic_fraction=0.5, class_offsets="synthetic", **TINY)  # as the cpu recipe
    side = pretrain_synthetic(out, cfg, workdir=tmp, n_images=3, size=96, seed=1)
    return out, side, tmp


def test_pretraining_trains_on_randomised_truth(pretrained):
    from semscale.store import open_store
    from semscale.synth.params import SimParams
    from semscale.synth.randomise import outside_ranges

    out, side, tmp = pretrained
    assert out.is_file() and json.loads(out.with_suffix(".json").read_text()) == side
    assert side["label_source"] == "truth" and side["pretraining"]["images"] == 3
    # every window from the simulated store, none mixed in; no class offsets in weights others start from
    assert side["sampler"]["synthetic_per_batch"] == 0 and side.get("class_offsets") is None
    store = open_store(tmp / "synthetic.zarr", mode="r")
    assert store.image_ids() == ["syn0000", "syn0001", "syn0002"]
    settings = [store.image_attrs(i)["simulated_params"] for i in store.image_ids()]
    assert len({json.dumps(s, sort_keys=True) for s in settings}) == 3  # one setting per image
    for s in settings:
        params = SimParams(**{k: tuple(tuple(r) if isinstance(r, list) else r for r in v)
                              if isinstance(v, list) else v for k, v in s.items()})
        assert outside_ranges(params) == []


def test_training_starts_from_init_weights(pretrained, train_store):
    import keras

    from semscale.training.fit import train_member
    from semscale.training.unet import load_model

    out, _side, _tmp = pretrained
    source, _ = load_model(out)

    class First(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = [w.copy() for w in self.model.get_weights()]

    first = First()
    cfg = TrainingConfig(name="tuned", init_weights=str(out), **{**TINY, "epochs": 1})
    side = train_member(train_store, cfg, member=0, callbacks=[first])
    for a, b in zip(first.weights, source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert side["fingerprint"]["init_weights"]["name"] == str(out)
    # other filters: the error names the file and how to fix it
    with pytest.raises(ModelError, match=r"pre.keras.*\(filters \[8, 16, 32\]\)\. Got filters \[4, 8, 16\]; set `training.filters`"):
        train_member(train_store, TrainingConfig(name="other", init_weights=str(out),
                                                 **{**TINY, "filters": (8, 16, 32)}), member=0)


def test_init_weights_names():
    assert init_weights_path("synthetic").name == SHIPPED["synthetic"]
    assert init_weights_path("synthetic").is_file()  # shipped with the package
    with pytest.raises(ConfigError, match="`training.init_weights`.*'nosuch.keras'.*does not exist"):
        init_weights_path("nosuch.keras")
    with pytest.raises(ConfigError, match="not a .keras file"):
        init_weights_path(__file__)
