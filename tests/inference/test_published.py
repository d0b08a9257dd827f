"""Published models run unchanged: Keras HDF5 import, per-window L2 normalisation, dropout off or Monte Carlo.

The reference is a plain NumPy re-implementation of the published procedure: windows of 256² px at stride s
inside the image, each normalised as ``keras.utils.normalize(x, axis=1)``, the network's softmax averaged
uniformly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from semscale.config import InferenceConfig
from semscale.errors import ConfigError, ModelError
from semscale.inference import predict, predict_to_store
from semscale.inference.published import (
    build_published_unet,
    graph_geometry,
    import_models,
    load_hdf5,
)
from semscale.store import create_store
from semscale.training.unet import build_unet, receptive_field_extents

P = 256
FILTERS = (4, 8, 16)
RATES = (0.1, 0.2, 0.3)


def published_unet(*, training_dropout: bool, seed: int = 0):
    """The published architecture at a tiny width."""
    return build_published_unet(filters=FILTERS, dropout=RATES, training_dropout=training_dropout, seed=seed)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """(legacy HDF5 file of the published net, the same weights without dropout for the reference)."""
    folder = tmp_path_factory.mktemp("published")
    model = published_unet(training_dropout=True)
    path = folder / "unet_1.h5"
    model.save(path)
    plain = published_unet(training_dropout=False, seed=1)
    plain.set_weights(model.get_weights())
    return path, plain


def reference(image: np.ndarray, net, *, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The published procedure: uniform mean of the softmax of windows at ``stride`` inside ``image``."""
    import keras

    h, w = image.shape
    acc = np.zeros((h, w, 4), np.float64)
    count = np.zeros((h, w), np.float64)
    for y in range(0, h - P + 1, stride):
        for x in range(0, w - P + 1, stride):
            win = keras.utils.normalize(image[None, y : y + P, x : x + P, None].astype(np.float32), axis=1)
            acc[y : y + P, x : x + P] += np.asarray(net(win, training=False))[0]
            count[y : y + P, x : x + P] += 1
    return acc / np.maximum(count, 1)[..., None], count


def store_with_image(tmp_path: Path, image: np.ndarray):
    store = create_store(tmp_path / "c.zarr", name="c", pixel_size_um=0.05)
    store.create_image("a", shape=image.shape, dtype=np.uint8, chunks=256, attrs={"role": "predict"})[:] = image
    store.finish_image("a", norm={"lo": 10.0, "hi": 200.0})
    return store


def sem(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(rng.normal(120, 60, shape), 3) * 3 - 240, 0, 255).astype(np.uint8)


def test_graph_geometry_is_the_exact_receptive_field_of_semscales_unet() -> None:
    model = build_unet(filters=(4, 8, 16, 32), seed=0)
    geo = graph_geometry(model)
    size, left, right = receptive_field_extents((4, 8, 16, 32))
    assert (geo.receptive_field_px, geo.halo_px, geo.multiple) == (size, max(left, right), 8)
    assert geo.filters == (4, 8, 16, 32) and geo.input_size is None


def test_import_writes_members_with_sidecars(tmp_path: Path, published) -> None:
    path, _ = published
    store = store_with_image(tmp_path, sem((256, 256)))
    row = import_models(store, [path, path], name="pub", normalisation="patch-l2", mc_dropout=4, seed=3)
    assert row["n_members"] == 2 and row["filters"] == list(FILTERS)
    side = row["members"][0]["path"]
    from semscale.store.models import read_sidecar

    meta = read_sidecar(side)
    assert meta["input_size"] == P and meta["multiple"] == 4 and meta["normalisation"]["method"] == "patch-l2"
    assert meta["dropout_inference"] == {"passes": 4, "seed": 3} and meta["source"]["file"] == "unet_1.h5"
    assert meta["dropout"] == [0.1, 0.2, 0.3, 0.2, 0.1]
    with pytest.raises(ModelError, match="already holds"):
        import_models(store, [path], name="pub", normalisation="patch-l2")
    import_models(store, [path], name="pub", normalisation="patch-l2", overwrite=True)
    assert len(store.model_members("pub")) == 1


def test_bad_files_are_refused_before_anything_is_written(tmp_path: Path, published) -> None:
    path, _ = published
    store = store_with_image(tmp_path, sem((256, 256)))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ModelError, match="junk.h5"):
        import_models(store, [path, junk], name="pub", normalisation="patch-l2")
    with pytest.raises(ModelError, match="no such file"):
        import_models(store, [tmp_path / "missing.h5"], name="pub", normalisation="patch-l2")
    with pytest.raises(ModelError, match="3 class outputs"):
        import_models(store, [path], name="pub", normalisation="patch-l2", classes=["a", "b", "c"])
    assert store.model_names() == []


def test_semscale_equals_the_published_procedure(tmp_path: Path, published) -> None:
    """Average mode at stride s with per-window L2 norm = the NumPy reference wherever the published procedure
    covers a pixel with the same windows (every pixel at least P - s px from the border), on an image that is
    not a multiple of 256; and everywhere once the reference mirrors the borders as semscale does."""
    path, plain = published
    image = sem((448, 576), seed=1)
    store = store_with_image(tmp_path, image)
    import_models(store, [path], name="pub", normalisation="patch-l2")
    s = 128
    cfg = InferenceConfig(mode="average", stride=s, probabilities=True, batch_size=3)
    predict_to_store(store, "a", models="pub", cfg=cfg)
    got = np.moveaxis(np.asarray(store.prediction_arrays("pub", "a")["probabilities"][...], np.float32), 0, -1)
    lazy = predict(da.from_array(image, chunks=(200, 160)), models=store.model_members("pub"), cfg=cfg)
    probs = lazy["probabilities"].compute()

    want, _ = reference(image, plain, stride=s)
    inner = tuple(slice(P - s, (n - P) // s * s + s) for n in image.shape)  # same windows in both
    np.testing.assert_allclose(probs[inner], want[inner], atol=2e-6)
    np.testing.assert_allclose(got[inner], want[inner], atol=1e-3)  # the store keeps float16

    pad = P - s
    mirrored = np.pad(image, ((pad, P), (pad, P)), mode="symmetric")
    full, _ = reference(mirrored, plain, stride=s)
    np.testing.assert_allclose(probs, full[pad : pad + 448, pad : pad + 576], atol=2e-6)
    np.testing.assert_array_equal(lazy["labels"].compute(), store.prediction_arrays("pub", "a")["labels"][...])


def test_window_modes_only(tmp_path: Path, published) -> None:
    path, _ = published
    store = store_with_image(tmp_path, sem((256, 256)))
    import_models(store, [path], name="pub", normalisation="patch-l2")
    with pytest.raises(ConfigError, match="--mode average"):
        predict_to_store(store, "a", models="pub", cfg=InferenceConfig(mode="tile"))
    with pytest.raises(ConfigError, match="fixed input"):
        predict_to_store(store, "a", models="pub", cfg=InferenceConfig(mode="average", patch_size=128))


def test_mc_dropout_is_reproducible_and_spreads(tmp_path: Path, published) -> None:
    path, plain = published
    image = sem((256, 384), seed=2)
    store = store_with_image(tmp_path, image)
    for name, seed in (("mc", 1), ("mc_again", 1), ("mc_other", 2)):
        import_models(store, [path], name=name, normalisation="patch-l2", mc_dropout=3, seed=seed)
    import_models(store, [path], name="off", normalisation="patch-l2")
    cfg = InferenceConfig(mode="average", stride=128, probabilities=True)
    out = {}
    for name in ("mc", "mc_again", "mc_other", "off"):
        predict_to_store(store, "a", models=name, cfg=cfg)
        arrays = store.prediction_arrays(name, "a")
        out[name] = {k: np.asarray(arrays[k][...]) for k in arrays if k in ("probabilities", "uncertainty")}
    np.testing.assert_array_equal(out["mc"]["probabilities"], out["mc_again"]["probabilities"])
    np.testing.assert_array_equal(out["mc"]["uncertainty"], out["mc_again"]["uncertainty"])
    other = np.abs(out["mc"]["probabilities"].astype(np.float32) - out["mc_other"]["probabilities"])
    assert (other > 0).mean() > 0.5  # another seed, other masks (the untrained net stays near 1/4)
    assert float(out["mc"]["uncertainty"].astype(np.float32).mean()) > 1e-4
    assert "uncertainty" not in out["off"]
    # dropout off is the deterministic network: the reference without dropout, every pixel
    want, _ = reference(np.pad(image, ((128, 256), (128, 256)), mode="symmetric"), plain, stride=128)
    np.testing.assert_allclose(np.moveaxis(out["off"]["probabilities"].astype(np.float32), 0, -1),
                               want[128 : 128 + 256, 128 : 128 + 384], atol=1e-3)


KERAS2 = textwrap.dedent('''
    import sys
    import numpy as np
    import tf_keras as K
    from tf_keras import layers as L

    def net(kw):
        K.utils.set_random_seed(0)
        def block(x, n, r):
            x = L.Conv2D(n, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same")(x)
            x = L.Dropout(r)(x, **kw)
            return L.Conv2D(n, (3, 3), activation="relu", kernel_initializer="he_normal", padding="same")(x)
        inputs = L.Input((256, 256, 1)); x = inputs; skips = []
        for n, r in ((4, 0.1), (8, 0.2)):
            x = block(x, n, r); skips.append(x); x = L.MaxPooling2D((2, 2))(x)
        x = block(x, 16, 0.3)
        for n, r, skip in zip((8, 4), (0.2, 0.1), skips[::-1]):
            x = L.Conv2DTranspose(n, (2, 2), strides=(2, 2), padding="same")(x)
            x = block(L.concatenate([x, skip]), n, r)
        return K.Model(inputs, L.Conv2D(4, (1, 1), activation="softmax")(x))

    published, plain = net({"training": True}), net({})
    plain.set_weights(published.get_weights())
    published.compile(optimizer=K.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    published.save(sys.argv[1])
    x = np.random.default_rng(0).random((2, 256, 256, 1)).astype("float32")
    np.save(sys.argv[2], x)
    np.save(sys.argv[3], plain.predict(K.utils.normalize(x, axis=1), verbose=0))
''')


def test_a_keras2_file_imports(tmp_path: Path) -> None:
    """A file written by Keras 2 (tf_keras, as TensorFlow < 2.16 or TF_USE_LEGACY_KERAS wrote it) loads with
    its weights: the imported network without dropout gives Keras 2's outputs."""
    pytest.importorskip("tf_keras", reason="dev extra")
    script = tmp_path / "make.py"
    script.write_text(KERAS2)
    h5, x, y = tmp_path / "k2.h5", tmp_path / "x.npy", tmp_path / "y.npy"
    subprocess.run([sys.executable, str(script), str(h5), str(x), str(y)], check=True, capture_output=True)
    model = load_hdf5(h5)
    assert graph_geometry(model).filters == (4, 8, 16)
    store = store_with_image(tmp_path, sem((256, 256)))
    import_models(store, [h5], name="k2", normalisation="patch-l2")
    from semscale.inference.members import member_fns, resolve_members

    members, _ = resolve_members(store.model_members("k2"))
    (fn,) = member_fns(members)[0]
    raw = np.load(x)
    np.testing.assert_allclose(fn(raw), np.load(y), atol=1e-5)
