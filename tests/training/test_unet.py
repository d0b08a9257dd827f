"""semscale.training.unet: the U-Net, its receptive field, save/load with sidecar, the worker-local cache."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from semscale.errors import ModelError


def _expected_params(filters, n_classes=4, channels=1):
    """Parameter count of the paper's U-Net, written out from its definition."""
    conv = lambda cin, cout, k: k * k * cin * cout + cout  # noqa: E731
    total, cin = 0, channels
    for f in filters[:-1]:
        total += conv(cin, f, 3) + conv(f, f, 3)
        cin = f
    total += conv(cin, filters[-1], 3) + conv(filters[-1], filters[-1], 3)
    for level in reversed(range(len(filters) - 1)):
        f = filters[level]
        total += conv(filters[level + 1], f, 2)  # transposed conv has the same count
        total += conv(2 * f, f, 3) + conv(f, f, 3)
    return total + conv(filters[0], n_classes, 1)


def test_paper_unet_structure():
    from semscale.training.unet import build_unet, unet_filters

    model = build_unet(seed=0)
    assert model.count_params() == _expected_params((16, 32, 64, 128, 256))
    assert unet_filters(model) == ((16, 32, 64, 128, 256), (0.1, 0.1, 0.2, 0.2, 0.3))
    assert model.input_shape == (None, None, None, 1)
    assert model.output_shape == (None, None, None, 4)
    pools = [layer for layer in model.layers if layer.__class__.__name__ == "MaxPooling2D"]
    assert len(pools) == 4


def test_tiny_unet_any_multiple_size_softmax_and_seed():
    import keras

    from semscale.training.unet import build_unet

    a = build_unet(filters=(4, 8, 16), seed=7)
    b = build_unet(filters=(4, 8, 16), seed=7)
    c = build_unet(filters=(4, 8, 16), seed=8)
    x = np.random.default_rng(0).random((2, 36, 20, 1)).astype(np.float32)
    ya = keras.ops.convert_to_numpy(a(x, training=False))
    assert ya.shape == (2, 36, 20, 4) and ya.dtype == np.float32
    np.testing.assert_allclose(ya.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(ya, keras.ops.convert_to_numpy(b(x, training=False)))
    assert not np.allclose(ya, keras.ops.convert_to_numpy(c(x, training=False)))


def test_output_is_float32_under_mixed_precision():
    import keras

    from semscale.training.unet import build_unet

    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_unet(filters=(2, 4), seed=0)
        y = model(np.zeros((1, 8, 8, 1), np.float32), training=False)
    finally:
        keras.config.set_dtype_policy(old)
    assert keras.ops.convert_to_numpy(y).dtype == np.float32


def test_bad_architecture_messages():
    from semscale.training.unet import build_unet

    with pytest.raises(ModelError, match="one dropout rate per level"):
        build_unet(filters=(4, 8, 16), dropout=(0.1, 0.2))
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_unet(filters=(4, 8), n_classes=1)


@pytest.mark.parametrize(
    ("filters", "tight"), [((4, 4, 4), True), ((4, 4, 4, 4), True), ((2, 2, 2, 2, 2), False)]
)
def test_receptive_field_matches_perturbation(filters, tight):
    """Perturbing one input pixel changes outputs only within the analytic one-sided extents, and (for the
    shallower nets, where ReLUs rarely cut every path) the changed span over all pooling alignments reaches
    them exactly."""
    import keras

    from semscale.training.unet import build_unet, receptive_field, receptive_field_extents

    size, left, right = receptive_field_extents(filters)
    assert receptive_field(filters) == size
    period = 2 ** (len(filters) - 1)
    n = -(-(2 * size + 4 * period) // period) * period
    model = build_unet(filters=filters, seed=3)
    x = np.random.default_rng(1).random((1, n, n, 1)).astype(np.float32)
    y0 = keras.ops.convert_to_numpy(model(x, training=False))
    seen_left = seen_right = seen_size = 0
    for d in range(period) if tight else (0, 3, 6, 9, 12, 15):
        q = n // 2 + d
        x2 = x.copy()
        x2[0, q, q, 0] += 10.0
        changed = np.abs(keras.ops.convert_to_numpy(model(x2, training=False)) - y0).max(axis=(0, 2, 3)) > 0
        rows = np.flatnonzero(changed)
        # output p depends on input q iff q is in RF(p): q - right <= p <= q + left
        assert rows.min() >= q - right and rows.max() <= q + left
        seen_left, seen_right = max(seen_left, rows.max() - q), max(seen_right, q - rows.min())
        seen_size = max(seen_size, rows.max() - rows.min() + 1)
    assert seen_size <= size
    if tight:
        assert (seen_left, seen_right) == (left, right)
    else:
        assert min(seen_left, seen_right) >= 0.8 * min(left, right)


def test_receptive_field_of_paper_net_and_model_argument():
    from semscale.training.unet import build_unet, receptive_field, receptive_field_extents

    assert receptive_field(build_unet(filters=(2, 2, 2), seed=0)) == receptive_field((2, 2, 2))
    size, left, right = receptive_field_extents((16, 32, 64, 128, 256))
    assert size == receptive_field((16, 32, 64, 128, 256))
    # lower bound from the conv chain alone: 2 convs per level on the way down and up, ±1 px at stride 2**l
    conv_only = 2 * sum(2 * 2**lvl for lvl in range(4)) + 2 * 2**4
    assert left >= conv_only and right >= conv_only and size >= 2 * conv_only + 1


def test_save_load_roundtrip(tmp_path):
    import keras

    from semscale.training.unet import build_unet, load_model, receptive_field, save_model

    model = build_unet(filters=(4, 8, 16), seed=2)
    path = save_model(model, tmp_path / "m.keras", sidecar={"patch_size": 32, "seed": 2, "training": {"epochs": 1}})
    assert path.exists() and path.with_suffix(".json").exists()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["classes"] == ["pore", "NiO", "Ni", "YSZ"]
    assert meta["filters"] == [4, 8, 16] and meta["receptive_field_px"] == receptive_field((4, 8, 16))
    assert meta["training"] == {"epochs": 1} and meta["patch_size"] == 32
    assert meta["keras_backend"] == keras.backend.backend() and "semscale_version" in meta
    assert "per-image" in meta["normalisation"]["method"]
    loaded, side = load_model(path)
    x = np.random.default_rng(0).random((1, 16, 24, 1)).astype(np.float32)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)), keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=0, atol=1e-7,
    )
    assert side == meta


def test_save_load_errors(tmp_path):
    from semscale.training.unet import build_unet, load_model, save_model

    model = build_unet(filters=(2, 4), seed=0)
    with pytest.raises(ModelError, match=r"\.keras"):
        save_model(model, tmp_path / "m.h5", sidecar={})
    with pytest.raises(ModelError, match="class names"):
        save_model(model, tmp_path / "m.keras", sidecar={"classes": ["a", "b"]})
    with pytest.raises(ModelError, match="Expected a model file"):
        load_model(tmp_path / "missing.keras")
    path = save_model(model, tmp_path / "m.keras", sidecar={})
    side = path.with_suffix(".json")
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "classes": ["a", "b", "c"], "n_classes": 3}))
    with pytest.raises(ModelError, match="Expected 3 outputs"):
        load_model(path)
    side.unlink()
    with pytest.raises(ModelError, match="sidecar"):
        load_model(path)


def test_load_is_safe_mode(tmp_path):
    """A model with a Python lambda cannot be deserialised (safe_mode=True)."""
    import keras

    from semscale.training.unet import build_unet, load_model, save_model

    good = save_model(build_unet(filters=(2, 4), seed=0), tmp_path / "good.keras", sidecar={})
    inp = keras.Input((None, None, 1))
    out = keras.layers.Conv2D(4, 1, activation="softmax")(keras.layers.Lambda(lambda t: t * 2.0)(inp))
    bad = tmp_path / "bad.keras"
    keras.Model(inp, out).save(bad)
    bad.with_suffix(".json").write_text(good.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="safe_mode"):
        load_model(bad)


def test_content_hash_and_cache(tmp_path):
    import semscale.training.unet as sm

    path = sm.save_model(sm.build_unet(filters=(2, 4), seed=0), tmp_path / "c.keras", sidecar={})
    assert sm.content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    sm.clear_model_cache()
    n0 = sm.LOAD_COUNT
    m1, _ = sm.get_cached_model(path)
    m2, _ = sm.get_cached_model(str(path), expected_hash=sm.content_hash(path))
    assert m1 is m2 and sm.LOAD_COUNT == n0 + 1
    with pytest.raises(ModelError, match="changed"):
        sm.get_cached_model(path, expected_hash="0" * 64)
    # new content at the same path: a new cache entry
    sm.save_model(sm.build_unet(filters=(2, 4), seed=1), path, sidecar={})
    m3, _ = sm.get_cached_model(path)
    assert m3 is not m1 and sm.LOAD_COUNT == n0 + 2
