"""semscale.inference: window geometry, blending modes vs the plain NumPy reference, chunk independence,
ensembles, TTA, Zarr→Zarr writing with resume, models loaded once per worker."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest

from semscale.errors import ConfigError
from semscale.inference import (
    combine_members,
    gaussian_weights,
    input_extent,
    make_geometry,
    predict,
    predict_outputs,
    reference_predict,
    required_depth,
    tile_spans,
    window_starts,
)


class PositionNet:
    """A fake network whose output depends on the pixel's position inside its window (so every blending
    error shows) and on the input value; inputs must be multiples of 4 px."""

    multiple = 4
    halo_px = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, h, w, _ = x.shape
        yy = np.linspace(0.0, 1.0, h)[None, :, None]
        xx = np.linspace(0.0, 1.0, w)[None, None, :]
        a = x[..., 0] * yy + xx
        z = np.stack([a, 1 - a, a * a, 0.5 + 0 * a], -1)
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)


class ConstantNet:
    """Returns the same probability vector everywhere."""

    multiple = 1
    halo_px = 0

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float32)

    def __call__(self, x):
        return np.broadcast_to(self.probs, x.shape[:-1] + self.probs.shape).copy()


def _keras_fn(path):
    import keras

    from semscale.training.unet import load_model

    model, meta = load_model(path)

    def fn(x):
        return keras.ops.convert_to_numpy(model(x, training=False))

    return fn, meta


@pytest.fixture(scope="module")
def odd_image():
    return np.random.default_rng(0).random((101, 77)).astype(np.float32)


# --- geometry ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("p", "s"), [(8, 8), (8, 3), (12, 4), (5, 2)])
def test_window_starts_are_exactly_the_overlapping_grid_windows(p, s):
    for start, stop in [(0, 1), (0, 17), (5, 23), (16, 40), (31, 32)]:
        brute = [k * s for k in range(-50, 50) if k * s < stop and k * s + p > start]
        np.testing.assert_array_equal(window_starts(start, stop, patch_size=p, stride=s), brute)


def test_every_pixel_covered_equally_when_stride_divides_patch():
    counts = np.zeros(60, int)
    for y in window_starts(0, 60, patch_size=16, stride=4):
        counts[max(0, y) : min(60, y + 16)] += 1
    assert (counts == 4).all()


def test_tile_spans_partition_and_alignment():
    for start, stop in [(0, 100), (13, 77), (64, 128)]:
        spans = tile_spans(start, stop, tile_size=32, halo=8, multiple=4)
        cores = [(c0, c1) for c0, c1, _, _ in spans]
        assert cores[0][0] == start and cores[-1][1] == stop
        assert all(a[1] == b[0] for a, b in zip(cores[:-1], cores[1:]))
        for c0, c1, i0, i1 in spans:
            assert i0 % 4 == 0 and i1 % 4 == 0 and c1 - c0 <= 32
            assert i0 <= c0 - 8 and i1 >= c1 + 8


@pytest.mark.parametrize("mode", ["average", "gaussian", "tile"])
def test_required_depth_covers_every_block(mode):
    geom = make_geometry(mode, patch_size=16, stride=6, halo_px=9, multiple=4, tile_size=16)
    chunks = ((30, 30, 17), (25, 25, 25, 2))
    depth = required_depth(chunks, geom)
    for axis, cs in enumerate(chunks):
        a = 0
        for c in cs:
            lo, hi = input_extent(a, a + c, geom)
            assert a - depth[axis] <= lo and hi <= a + c + depth[axis]
            a += c


def test_gaussian_weights():
    w = gaussian_weights(32, sigma_fraction=0.125)
    assert w.shape == (32, 32) and w.dtype == np.float32
    np.testing.assert_allclose(w, w.T)
    np.testing.assert_allclose(w, w[::-1, ::-1])
    assert w.max() == pytest.approx(1.0, abs=1e-6) == w[15:17, 15:17].max()
    np.testing.assert_allclose(w[0, 15] / w[15, 15], np.exp(-0.5 * (15.5 / 4) ** 2) / np.exp(-0.5 * (0.5 / 4) ** 2), rtol=1e-5)


def test_bad_options_are_clear():
    with pytest.raises(ConfigError, match="inference.mode"):
        make_geometry("median")
    with pytest.raises(ConfigError, match="stride"):
        make_geometry("average", patch_size=32, stride=64)
    with pytest.raises(ConfigError, match="multiple of 4"):
        make_geometry("average", patch_size=30, multiple=4)
    with pytest.raises(ConfigError, match="norm"):
        predict(da.zeros((20, 20), dtype=np.uint8, chunks=10), models=[PositionNet()], mode="tile")


# --- modes vs the NumPy reference (fake net: exact) ------------------------------------------------
@pytest.mark.parametrize(("mode", "stride"), [("average", 8), ("average", 12), ("gaussian", 8), ("average", 32)])
@pytest.mark.parametrize("chunks", [(40, 30), (17, 77), (101, 77)])
def test_window_modes_equal_reference_exactly(odd_image, mode, stride, chunks):
    ref = reference_predict(odd_image, predict_fn=PositionNet(), mode=mode, patch_size=32, stride=stride)
    out = predict(da.from_array(odd_image, chunks=chunks), models=[PositionNet()], mode=mode, patch_size=32,
                  stride=stride, batch_size=5).compute()
    assert out.shape == (101, 77, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)


def test_average_stride_p_is_naive_patch_stitching(odd_image):
    p = 32
    h, w = odd_image.shape
    padded = np.pad(odd_image, ((0, -h % p), (0, -w % p)), mode="symmetric")
    naive = np.zeros((*padded.shape, 4), np.float32)
    net = PositionNet()
    for y in range(0, padded.shape[0], p):
        for x in range(0, padded.shape[1], p):
            naive[y : y + p, x : x + p] = net(padded[None, y : y + p, x : x + p, None])[0]
    out = predict(da.from_array(odd_image, chunks=(50, 40)), models=[net], mode="average", patch_size=p,
                  stride=p).compute()
    np.testing.assert_allclose(out, naive[:h, :w], rtol=0, atol=1e-7)


def test_tta_equals_reference_and_is_identity_for_pointwise_nets(odd_image):
    ref = reference_predict(odd_image, predict_fn=PositionNet(), mode="average", patch_size=16, stride=8, tta=True)
    out = predict(da.from_array(odd_image, chunks=(40, 40)), models=[PositionNet()], mode="average",
                  patch_size=16, stride=8, tta=True).compute()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)
    plain = predict(da.from_array(odd_image, chunks=(40, 40)), models=[PositionNet()], mode="average",
                    patch_size=16, stride=8).compute()
    assert np.abs(out - plain).max() > 1e-3  # the fake net is not flip-invariant: TTA does something

    class Pointwise:
        multiple = 1

        def __call__(self, x):
            z = np.concatenate([x, 1 - x], -1)
            return (z / z.sum(-1, keepdims=True)).astype(np.float32)

    img = da.from_array(odd_image + 0.1, chunks=40)
    a = predict(img, models=[Pointwise()], mode="average", patch_size=8, stride=4, tta=True).compute()
    b = predict(img, models=[Pointwise()], mode="average", patch_size=8, stride=4).compute()
    np.testing.assert_allclose(a, b, atol=1e-6)


# --- ensembles ---------------------------------------------------------------------------------------
def test_ensemble_mean_std_confidence_on_known_inputs():
    img = da.zeros((23, 19), dtype=np.float32, chunks=10)
    members = [ConstantNet([0.7, 0.1, 0.1, 0.1]), ConstantNet([0.5, 0.3, 0.1, 0.1]), ConstantNet([0.3, 0.1, 0.5, 0.1])]
    outs = predict_outputs(img, models=members, mode="gaussian", patch_size=8, stride=4)
    np.testing.assert_allclose(outs["probabilities"].compute(), np.broadcast_to([0.5, 0.5 / 3, 0.7 / 3, 0.1], (23, 19, 4)), atol=1e-6)
    assert (outs["labels"].compute() == 0).all()
    np.testing.assert_allclose(outs["confidence"].compute(), 0.5, atol=1e-6)
    np.testing.assert_allclose(outs["uncertainty"].compute(), np.std([0.7, 0.5, 0.3]), atol=1e-6)
    single = predict_outputs(img, models=members[:1], mode="tile", tile_size=8)
    assert float(abs(single["uncertainty"]).max().compute()) == 0.0


def test_combine_members_matches_numpy_formulas():
    rng = np.random.default_rng(3)
    p = rng.random((3, 5, 6, 4)).astype(np.float32)
    p /= p.sum(-1, keepdims=True)
    out = combine_members(list(p))
    mean = p.mean(0)
    lab = mean.argmax(-1)
    np.testing.assert_allclose(out[..., :4], mean, atol=1e-7)
    np.testing.assert_allclose(out[..., 4], mean.max(-1), atol=1e-7)
    want = np.array([[np.std(p[:, i, j, lab[i, j]]) for j in range(6)] for i in range(5)])
    np.testing.assert_allclose(out[..., 5], want, atol=1e-6)


# --- the tiny U-Net on a real cluster ----------------------------------------------------------------
@pytest.mark.parametrize(("mode", "stride"), [("average", 16), ("gaussian", 8), ("tile", None)])
def test_unet_modes_equal_reference_and_chunkings_agree(client, tiny_unet_path, odd_image, mode, stride):
    fn, meta = _keras_fn(tiny_unet_path)
    halo = -(-meta["halo_px"] // meta["multiple"]) * meta["multiple"]
    ref = reference_predict(odd_image, predict_fn=fn, mode=mode, patch_size=32, stride=stride, halo=halo,
                            multiple=meta["multiple"])
    results = []
    for chunks in [(64, 64), (37, 50)]:
        outs = predict_outputs(da.from_array(odd_image, chunks=chunks), models=[tiny_unet_path], mode=mode,
                               stride=stride, tile_size=32)
        probs, labels = client.compute([outs["probabilities"], outs["labels"]], sync=True)
        np.testing.assert_allclose(probs, ref, rtol=0, atol=2e-6)
        results.append(labels)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], ref.argmax(-1))


def test_tasks_carry_paths_not_models(tiny_unet_path):
    arr = predict(da.zeros((64, 64), np.float32, chunks=32), models=[tiny_unet_path], mode="tile")
    blob = pickle.dumps(dict(arr.__dask_graph__()))
    assert len(blob) < 50_000  # the tiny model's .keras file alone is larger than this
    assert str(tiny_unet_path.resolve()).encode() in blob


# --- Zarr → Zarr ------------------------------------------------------------------------------------
def _make_store(tmp_path, shape=(150, 131), chunk=64, seed=0):
    from semscale.kernels.norm import histogram, norm_from_histogram
    from semscale.store import create_store

    img = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    s = create_store(tmp_path / "c.zarr", name="t", pixel_size_um=0.04458)
    a = s.create_image("im", shape=img.shape, dtype=img.dtype, chunks=chunk)
    a[:] = img
    s.finish_image("im", norm=norm_from_histogram(histogram(img, nbins=256)))
    return s, img


def _chunk_files(store, model, key):
    return sorted(p for p in (store.path / "predictions" / model / "im" / key / "c").rglob("*") if p.is_file())


def test_predict_to_store_writes_resumes_and_is_bit_identical(tmp_path, client, tiny_ensemble_paths, monkeypatch):
    import semscale.store
    from semscale.inference import predict_to_store

    monkeypatch.setattr(semscale.store.ngff, "PYRAMID_MIN_SIZE", 64)  # a pyramid even for this small image

    store, img = _make_store(tmp_path)
    kw = {"model_paths": tiny_ensemble_paths, "model_name": "ens", "mode": "average", "stride": 16,
          "write_probabilities": True, "client": client}
    first = predict_to_store(store, "im", **kw)
    assert first["blocks"] == 9 and first["computed"] == 9
    g = store.prediction_group("ens", "im")
    assert g.attrs["semscale"]["complete"] is True
    ome = g["labels"].attrs["ome"]
    assert [c["label-value"] for c in ome["image-label"]["colors"]][:4] == [0, 1, 2, 3]
    assert ome["multiscales"][0]["axes"][0]["unit"] == "micrometer"
    outs = {k: v.compute() for k, v in store.predictions("ens", "im").items()}
    assert outs["labels"].dtype == np.uint8 and outs["confidence"].dtype == np.float16
    assert outs["probabilities"].shape == (4, 150, 131)
    # a label pyramid for viewers: nearest-neighbour levels, declared in the NGFF multiscales
    paths = [d["path"] for d in ome["multiscales"][0]["datasets"]]
    assert len(paths) >= 2 and all(p in g["labels"] for p in paths)
    np.testing.assert_array_equal(g["labels/1"][:], outs["labels"][::2, ::2])
    # same numbers as the lazy dask path on the same chunking
    lazy = predict_outputs(da.from_array(img, chunks=64), models=tiny_ensemble_paths, mode="average", stride=16,
                           norm=store.norm("im"))
    want = client.compute([lazy["labels"], lazy["confidence"], lazy["uncertainty"]], sync=True)
    np.testing.assert_array_equal(outs["labels"], want[0])
    np.testing.assert_array_equal(outs["confidence"], want[1].astype(np.float16))
    np.testing.assert_array_equal(outs["uncertainty"], want[2].astype(np.float16))
    np.testing.assert_allclose(outs["probabilities"].astype(np.float32).sum(0), 1.0, atol=4e-3)

    again = predict_to_store(store, "im", **kw)
    assert again["computed"] == 0 and again["skipped"] == 9

    # delete two label chunks and one confidence chunk (other blocks): exactly those blocks are redone
    labels_files = _chunk_files(store, "ens", "labels/0")
    conf_files = _chunk_files(store, "ens", "confidence")
    for f in [labels_files[0], labels_files[4], conf_files[8]]:
        f.unlink()
    third = predict_to_store(store, "im", **kw)
    assert third["computed"] == 3
    redo = {k: v.compute() for k, v in store.predictions("ens", "im").items()}
    for k in outs:
        np.testing.assert_array_equal(redo[k], outs[k])

    forced = predict_to_store(store, "im", **{**kw, "overwrite": True})
    assert forced["computed"] == 9
    np.testing.assert_array_equal(store.predictions("ens", "im")["labels"].compute(), outs["labels"])


def test_predict_to_store_without_client_and_changed_settings(tmp_path, tiny_unet_path):
    from semscale.inference import predict_to_store

    store, img = _make_store(tmp_path, shape=(70, 90), chunk=32)
    a = predict_to_store(store, "im", model_paths=tiny_unet_path, model_name="m", mode="tile", tile_size=32)
    assert a["computed"] == 9 and "uncertainty" not in store.prediction_group("m", "im")
    b = predict_to_store(store, "im", model_paths=tiny_unet_path, model_name="m", mode="gaussian", stride=16)
    assert b["computed"] == 9  # new settings: everything recomputed
    ref_fn, _ = _keras_fn(tiny_unet_path)
    from semscale.kernels.norm import apply_norm

    ref = reference_predict(apply_norm(img, store.norm("im")), predict_fn=ref_fn, mode="gaussian", patch_size=32,
                            stride=16)
    np.testing.assert_array_equal(store.predictions("m", "im")["labels"].compute(), ref.argmax(-1))


def test_segment_array_matches_lazy_path(tiny_unet_path):
    from semscale.inference import norm_for_array, segment_array

    img = np.random.default_rng(5).integers(10, 200, (90, 70), dtype=np.uint8)
    out = segment_array(img, model_paths=tiny_unet_path, mode="tile", chunk=48, probabilities=True)
    assert set(out) == {"labels", "confidence", "probabilities"}
    lazy = predict_outputs(da.from_array(img, chunks=90), models=[tiny_unet_path], mode="tile",
                           norm=norm_for_array(img))
    np.testing.assert_array_equal(out["labels"], lazy["labels"].compute())
    assert out["probabilities"].shape == (4, 90, 70)


def test_models_load_once_per_worker_process(tmp_path, tiny_unet_path):
    """Real worker processes: each loads the model from its path once, however many blocks it runs."""
    from distributed import Client, LocalCluster

    from semscale.inference import predict_to_store

    store, _ = _make_store(tmp_path, shape=(128, 160), chunk=32)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        res = predict_to_store(store, "im", model_paths=tiny_unet_path, model_name="m", mode="tile", client=c)
        counts = c.run(lambda: __import__("semscale.training.unet", fromlist=["x"]).LOAD_COUNT)
    assert res["computed"] == 20
    assert sorted(counts.values()) in ([1, 1], [0, 1])
