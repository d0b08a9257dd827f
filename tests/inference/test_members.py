"""semscale.inference.members: model references and facts, the geometry built from config + model, models
by name in a store or by path."""

from __future__ import annotations

import numpy as np
import pytest

from semscale.config import InferenceConfig
from semscale.errors import ConfigError, ModelError
from semscale.inference.members import (
    ModelFacts,
    ModelRef,
    make_geometry,
    member_fns,
    resolve_members,
    store_models,
)
from semscale.training.unet import content_hash, read_sidecar
from tests.oracles import ConstantNet, PositionNet, make_store


def _facts(**kw):
    return ModelFacts(**{"n_classes": 4, "classes": None, "multiple": 8, "halo_px": 21, "patch_size": 128, **kw})


def test_geometry_defaults_come_from_the_config_and_the_model():
    cfg = InferenceConfig(mode="gaussian")
    geom = make_geometry(cfg, _facts())
    assert geom.patch_size == 128  # the model's (sidecar) patch size
    assert geom.stride == 128  # the documented default: stride = patch size
    assert geom.halo == 24  # 21 px rounded up to the multiple 8
    assert (geom.tile_size, geom.sigma_fraction, geom.batch_size, geom.tta) == (
        cfg.tile_size, cfg.sigma_fraction, cfg.batch_size, cfg.tta)
    over = make_geometry(InferenceConfig(mode="average", patch_size=64, stride=16), _facts())
    assert (over.patch_size, over.stride) == (64, 16)  # the config's patch size wins over the sidecar's


def test_resolve_members_reads_sidecars_and_hashes(tiny_unet_path, tiny_ensemble_paths):
    members, facts = resolve_members([tiny_unet_path, *tiny_ensemble_paths])
    meta = read_sidecar(tiny_unet_path)
    assert members[0] == ModelRef(str(tiny_unet_path.resolve()), content_hash(tiny_unet_path))
    assert facts.n_classes == len(meta["classes"]) and facts.classes == tuple(meta["classes"])
    assert (facts.multiple, facts.halo_px, facts.patch_size) == (meta["multiple"], meta["halo_px"], meta["patch_size"])
    one, _ = resolve_members(tiny_unet_path)  # one path is an ensemble of one
    assert one == members[:1]


def test_resolve_members_of_callables_and_mismatches():
    members, facts = resolve_members([PositionNet(), ConstantNet([0.1, 0.2, 0.3, 0.4])])
    assert len(members) == 2 and all(callable(m) for m in members)  # fake nets travel as they are
    assert facts.multiple == 4 and facts.n_classes == 4 and facts.patch_size is None
    with pytest.raises(ModelError, match="same number of classes"):
        resolve_members([PositionNet(), ConstantNet([0.5, 0.5])])
    with pytest.raises(ConfigError, match="at least one model"):
        resolve_members([])


def test_member_fns_load_through_the_worker_cache(tiny_unet_path):
    from semscale.training import unet

    members, _ = resolve_members([tiny_unet_path])
    before = unet.LOAD_COUNT
    fns = [f for fns in member_fns(members) + member_fns(members) for f in fns]  # one pass per member
    assert len(fns) == 2 and unet.LOAD_COUNT - before <= 1  # the second call hits the cache
    x = np.random.default_rng(0).random((1, 32, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(fns[0](x), fns[1](x))
    np.testing.assert_allclose(fns[0](x).sum(-1), 1.0, atol=1e-5)


def test_store_models_by_name_or_path(tmp_path, tiny_unet_path):
    store, _ = make_store(tmp_path, shape=(32, 32), chunk=32)
    with pytest.raises(ModelError, match="Expected trained members"):
        store_models(store, "absent", model_name=None, cfg=InferenceConfig())
    paths, name = store_models(store, [str(tiny_unet_path)], model_name=None, cfg=InferenceConfig(model="x"))
    assert (paths, name) == ([tiny_unet_path], "x")
    with pytest.raises(ConfigError, match="model_name"):
        store_models(store, [tiny_unet_path], model_name=None, cfg=InferenceConfig())
