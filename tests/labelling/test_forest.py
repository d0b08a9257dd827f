"""Tests of semscale.labelling.forest: the config's forest, blockwise prediction equal to numpy."""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pytest

from semscale.config import LabellingConfig
from semscale.errors import InputImageError
from semscale.labelling import predict_labels, train_classifier
from semscale.labelling.forest import fit_pooled

SMALL = dataclasses.replace(LabellingConfig(), n_estimators=8, n_jobs=1)


def test_predict_blockwise_equals_numpy():
    rng = np.random.default_rng(0)
    x = rng.random((600, 5)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.uint8) * 3
    rf = train_classifier(x, y, SMALL)
    feats = rng.random((37, 29, 5)).astype(np.float32)
    want = predict_labels(feats, rf)
    got = predict_labels(da.from_array(feats, chunks=(10, 12, 5)), rf).compute()
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(want)) <= {0, 3}
    with pytest.raises(InputImageError, match="two classes"):
        train_classifier(x, np.zeros(600, np.uint8), SMALL)


def test_forest_follows_the_config_and_pools_in_order():
    rng = np.random.default_rng(1)
    xs = [rng.random((300, 4)).astype(np.float32), np.zeros((0, 1), np.float32), rng.random((200, 4)).astype(np.float32)]
    ys = [(x[:, 1] > 0.5).astype(np.uint8) if len(x) else np.zeros(0, np.uint8) for x in xs]
    cfg = dataclasses.replace(LabellingConfig(), n_estimators=5, max_depth=3, seed=7, n_jobs=1)
    model, pooled, secs = fit_pooled(xs, ys, cfg, classes=("a", "b"), what="test seeds")
    assert len(model.estimators_) == 5 and model.max_depth == 3 and model.random_state == 7
    assert model.n_jobs == 1 and secs >= 0
    assert pooled == {"a": int((ys[0] == 0).sum() + (ys[2] == 0).sum()), "b": int(ys[0].sum() + ys[2].sum())}
    again, _, _ = fit_pooled(xs, ys, cfg, classes=("a", "b"), what="test seeds")
    probe = rng.random((50, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict_proba(probe), again.predict_proba(probe))  # deterministic
