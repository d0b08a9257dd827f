"""semscale.inference.graph: the map_overlap graph and ``predict`` — blending modes vs the plain NumPy
reference, chunk independence, ensembles, TTA, the tiny U-Net on a real cluster, tasks that carry paths."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest

from semscale.config import InferenceConfig
from semscale.errors import ConfigError
from semscale.inference import layout_for, predict
from tests.oracles import (
    ConstantNet,
    Pointwise,
    PositionNet,
    geometry,
    keras_fn,
    reference_predict,
    tiled_reference,
)


@pytest.fixture(scope="module")
def odd_image():
    return np.random.default_rng(0).random((101, 77)).astype(np.float32)


def _probs(image, models, **settings):
    return predict(image, models=models, cfg=InferenceConfig(**settings))["probabilities"].compute()


# --- layout ----------------------------------------------------------------------------------------
def test_layout_groups_whole_cores_narrower_than_the_halo():
    geom = geometry(InferenceConfig(mode="average", patch_size=32, stride=16))
    lay = layout_for(((64, 64, 22), (64, 64, 3)), geom)
    # the last cores' windows reach furthest: 144 + 32 - 150 = 26 and 128 + 32 - 131 = 29 px past the image
    assert lay.depth == (26, 29) and not lay.whole
    assert lay.tasks == ((64, 86), (64, 67))  # a short tail joins its neighbour; cuts stay on core edges
    assert [ix for ix, _ in lay.task_cores((1, 1))] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert lay.task_cores((1, 0))[1] == ((2, 0), ((128, 150), (0, 64)))
    assert lay.task_of((2, 2)) == (1, 1) and lay.task_of((0, 1)) == (0, 1)
    assert lay.origin((1, 1)) == (64 - 26, 64 - 29)
    assert layout_for(((20,), (30,)), geom).whole  # halo larger than the image: one mirrored task


# --- modes vs the NumPy reference (fake net: exact) ------------------------------------------------
@pytest.mark.parametrize(("mode", "stride"), [("average", 8), ("average", 12), ("gaussian", 8), ("average", 32)])
@pytest.mark.parametrize("chunks", [(40, 30), (17, 77), (101, 77)])
def test_window_modes_equal_reference_exactly(odd_image, mode, stride, chunks):
    cfg = InferenceConfig(mode=mode, patch_size=32, stride=stride, batch_size=5)
    ref = reference_predict(odd_image, predict_fn=PositionNet(), geom=geometry(cfg, multiple=4))
    out = predict(da.from_array(odd_image, chunks=chunks), models=[PositionNet()], cfg=cfg)["probabilities"].compute()
    assert out.shape == (101, 77, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)


def test_stride_defaults_to_the_patch_size_naive_patch_stitching(odd_image):
    p = 32
    h, w = odd_image.shape
    padded = np.pad(odd_image, ((0, -h % p), (0, -w % p)), mode="symmetric")
    naive = np.zeros((*padded.shape, 4), np.float32)
    net = PositionNet()
    for y in range(0, padded.shape[0], p):
        for x in range(0, padded.shape[1], p):
            naive[y : y + p, x : x + p] = net(padded[None, y : y + p, x : x + p, None])[0]
    out = _probs(da.from_array(odd_image, chunks=(50, 40)), [net], mode="average", patch_size=p)
    np.testing.assert_allclose(out, naive[:h, :w], rtol=0, atol=1e-7)


def test_tta_equals_reference_and_is_identity_for_pointwise_nets(odd_image):
    cfg = InferenceConfig(mode="average", patch_size=16, stride=8, tta=True)
    ref = reference_predict(odd_image, predict_fn=PositionNet(), geom=geometry(cfg, multiple=4))
    img = da.from_array(odd_image, chunks=(40, 40))
    out = predict(img, models=[PositionNet()], cfg=cfg)["probabilities"].compute()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)
    plain = _probs(img, [PositionNet()], mode="average", patch_size=16, stride=8)
    assert np.abs(out - plain).max() > 1e-3  # the fake net is not flip-invariant: TTA does something

    img = da.from_array(odd_image + 0.1, chunks=40)
    a = _probs(img, [Pointwise()], mode="average", patch_size=16, stride=8, tta=True)
    b = _probs(img, [Pointwise()], mode="average", patch_size=16, stride=8)
    np.testing.assert_allclose(a, b, atol=1e-6)


# --- ensembles ---------------------------------------------------------------------------------------
def test_ensemble_mean_std_confidence_on_known_inputs():
    img = da.zeros((23, 19), dtype=np.float32, chunks=10)
    members = [ConstantNet([0.7, 0.1, 0.1, 0.1]), ConstantNet([0.5, 0.3, 0.1, 0.1]), ConstantNet([0.3, 0.1, 0.5, 0.1])]
    outs = predict(img, models=members, cfg=InferenceConfig(mode="gaussian", patch_size=16, stride=4))
    np.testing.assert_allclose(outs["probabilities"].compute(), np.broadcast_to([0.5, 0.5 / 3, 0.7 / 3, 0.1], (23, 19, 4)), atol=1e-6)
    assert (outs["labels"].compute() == 0).all()
    np.testing.assert_allclose(outs["confidence"].compute(), 0.5, atol=1e-6)
    np.testing.assert_allclose(outs["uncertainty"].compute(), np.std([0.7, 0.5, 0.3]), atol=1e-6)
    single = predict(img, models=members[:1], cfg=InferenceConfig(mode="tile", tile_size=16))
    assert float(abs(single["uncertainty"]).max().compute()) == 0.0


def test_bad_input_is_clear():
    with pytest.raises(ConfigError, match="norm"):
        predict(da.zeros((20, 20), dtype=np.uint8, chunks=10), models=[PositionNet()])
    with pytest.raises(ConfigError, match="2-D"):
        predict(da.zeros((4, 20, 20), dtype=np.float32, chunks=10), models=[PositionNet()])


# --- the tiny U-Net on a real cluster ----------------------------------------------------------------
@pytest.mark.parametrize(("mode", "stride"), [("average", 16), ("gaussian", 8), ("tile", None)])
def test_unet_modes_equal_reference_and_chunkings_agree(client, tiny_unet_path, odd_image, mode, stride):
    fn, meta = keras_fn(tiny_unet_path)
    cfg = InferenceConfig(mode=mode, stride=stride, tile_size=32)  # patch size: the sidecar's (32)
    ref = reference_predict(odd_image, predict_fn=fn, geom=geometry(
        InferenceConfig(mode=mode, patch_size=32, stride=stride, tile_size=32), multiple=meta["multiple"],
        halo_px=meta["halo_px"]))
    results = []
    for chunks in [(64, 64), (37, 50)]:
        outs = predict(da.from_array(odd_image, chunks=chunks), models=[tiny_unet_path], cfg=cfg)
        probs, labels = client.compute([outs["probabilities"], outs["labels"]], sync=True)
        np.testing.assert_allclose(probs, ref, rtol=0, atol=2e-6)
        results.append(labels)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], ref.argmax(-1))


def test_a_smaller_tile_halo_is_what_tile_mode_computes_at_any_chunking(tiny_unet_path, odd_image):
    """``inference.halo``: tiles get that context (rounded up to the pooling multiple) instead of the
    receptive field's; the output equals tiles on the global grid run one by one with that halo, for any
    chunks whose edges lie on that grid (others are refused), and differs from the exact-halo output (the
    setting takes effect); a halo wider than the receptive field is the exact one, at any chunking."""
    fn, meta = keras_fn(tiny_unet_path)
    assert meta["halo_px"] > 8
    cfg = InferenceConfig(mode="tile", tile_size=32, halo=6)  # rounded up to 8 (multiple 4)
    geom = geometry(cfg, multiple=meta["multiple"], halo_px=meta["halo_px"])
    assert geom.halo == 8
    ref = tiled_reference(odd_image, predict_fn=fn, geom=geom)
    for chunks in [(64, 64), (32, 96), (101, 77)]:  # block edges on the tile grid
        probs = predict(da.from_array(odd_image, chunks=chunks), models=[tiny_unet_path], cfg=cfg)["probabilities"]
        np.testing.assert_allclose(probs.compute(), ref, rtol=0, atol=2e-6)
    with pytest.raises(ConfigError, match=r"block edges on multiples of inference\.tile_size \(32 px\)"):
        predict(da.from_array(odd_image, chunks=(37, 50)), models=[tiny_unet_path], cfg=cfg)
    exact_geom = geometry(InferenceConfig(mode="tile", tile_size=32), multiple=meta["multiple"],
                          halo_px=meta["halo_px"])
    exact = reference_predict(odd_image, predict_fn=fn, geom=exact_geom)
    np.testing.assert_allclose(tiled_reference(odd_image, predict_fn=fn, geom=exact_geom), exact, atol=2e-6)
    assert np.abs(exact - ref).max() > 1e-3
    wide = InferenceConfig(mode="tile", tile_size=32, halo=meta["halo_px"] + 50)  # more than exact: exact
    assert geometry(wide, multiple=meta["multiple"], halo_px=meta["halo_px"]) == exact_geom
    np.testing.assert_allclose(predict(da.from_array(odd_image, chunks=(37, 50)), models=[tiny_unet_path],
                                       cfg=wide)["probabilities"].compute(), exact, rtol=0, atol=2e-6)
    with pytest.raises(ConfigError, match=r"inference\.halo"):
        InferenceConfig(halo=-1)


def test_tasks_carry_paths_not_models(tiny_unet_path):
    arr = predict(da.zeros((64, 64), np.float32, chunks=32), models=[tiny_unet_path])["probabilities"]
    blob = pickle.dumps(dict(arr.__dask_graph__()))
    assert len(blob) < 50_000  # the tiny model's .keras file alone is larger than this
    assert str(tiny_unet_path.resolve()).encode() in blob


@pytest.mark.parametrize(("mode", "stride"), [("average", 16)])
def test_the_network_sees_one_input_shape(tiny_unet_path, odd_image, mode, stride):
    """Short last batches of windows reach the network padded to full batches (one shape), and the numbers
    are the unpadded reference's."""
    fn, meta = keras_fn(tiny_unet_path)
    shapes: set[tuple[int, ...]] = set()

    class Recording:
        multiple, halo_px, patch_size = meta["multiple"], meta["halo_px"], 32

        def __call__(self, x):
            shapes.add(x.shape)
            return fn(x)

    cfg = InferenceConfig(mode=mode, stride=stride, tile_size=32, patch_size=32, batch_size=5)
    probs = predict(da.from_array(odd_image, chunks=(37, 50)), models=[Recording()], cfg=cfg)["probabilities"]
    ref = reference_predict(odd_image, predict_fn=fn, geom=geometry(cfg, multiple=meta["multiple"],
                                                                    halo_px=meta["halo_px"]))
    np.testing.assert_allclose(probs.compute(scheduler="sync"), ref, rtol=0, atol=2e-6)
    assert len(shapes) == 1, shapes
