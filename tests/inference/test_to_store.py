"""semscale.inference.to_store: Zarr → Zarr writing, done markers and resume, bit-identical reruns, models
by name in the store, models loaded once per worker."""

from __future__ import annotations

import dataclasses
import shutil

import dask.array as da
import numpy as np
import pytest

from semscale.config import InferenceConfig
from semscale.errors import ConfigError
from semscale.inference import predict, predict_to_store
from semscale.kernels.norm import apply_norm
from semscale.store.blockwise import settings_hash
from tests.oracles import geometry, keras_fn, make_store, reference_predict


def _chunk_files(store, model, name):
    array = store.prediction_arrays(model, "im")[name]
    return sorted(p for p in (store.path / array.path / "c").rglob("*") if p.is_file())


def test_predict_to_store_writes_resumes_and_is_bit_identical(tmp_path, client, tiny_ensemble_paths, monkeypatch):
    import semscale.store

    monkeypatch.setattr(semscale.store.ngff, "PYRAMID_MIN_SIZE", 64)  # a pyramid even for this small image

    store, img = make_store(tmp_path)
    cfg = InferenceConfig(mode="average", stride=16, probabilities=True)
    kw = {"models": tiny_ensemble_paths, "model_name": "ens", "client": client}
    first = predict_to_store(store, "im", cfg, **kw)
    assert first["blocks"] == 9 and first["computed"] == 9
    g = store.prediction_group("ens", "im")
    assert g.attrs["semscale"]["complete"] is True
    lg = store.root["images/im/labels/ens"]  # beside the image's own labels: viewers open it with the image
    ome = lg.attrs["ome"]
    assert [c["label-value"] for c in ome["image-label"]["colors"]][:4] == [0, 1, 2, 3]
    assert ome["multiscales"][0]["axes"][0]["unit"] == "micrometer"
    outs = {k: v.compute() for k, v in store.predictions("ens", "im").items()}
    assert outs["labels"].dtype == np.uint8 and outs["confidence"].dtype == np.float16
    assert outs["probabilities"].shape == (4, 150, 131)
    # a label pyramid for viewers: nearest-neighbour levels, declared in the NGFF multiscales
    paths = [d["path"] for d in ome["multiscales"][0]["datasets"]]
    assert len(paths) >= 2 and all(p in lg for p in paths)
    np.testing.assert_array_equal(lg["scale1/image"][:], outs["labels"][::2, ::2])
    # done markers: the settings hash, in every block
    assert (g["done"][:] == settings_hash(g.attrs["semscale"]["params"])).all()
    # same numbers as the lazy dask path on the same chunking
    lazy = predict(da.from_array(img, chunks=64), models=tiny_ensemble_paths, cfg=cfg, norm=store.norm("im"))
    want = client.compute([lazy["labels"], lazy["confidence"], lazy["uncertainty"]], sync=True)
    np.testing.assert_array_equal(outs["labels"], want[0])
    np.testing.assert_array_equal(outs["confidence"], want[1].astype(np.float16))
    np.testing.assert_array_equal(outs["uncertainty"], want[2].astype(np.float16))
    np.testing.assert_allclose(outs["probabilities"].astype(np.float32).sum(0), 1.0, atol=4e-3)
    # each member's own labels, for the spread of the statistics: those of the member alone
    assert outs["members"].shape == (2, 150, 131)
    for m, path in enumerate(tiny_ensemble_paths):
        alone = predict(da.from_array(img, chunks=64), models=[path], cfg=cfg, norm=store.norm("im"))["labels"]
        np.testing.assert_array_equal(outs["members"][m], alone.compute())

    again = predict_to_store(store, "im", cfg, **kw)
    assert again["computed"] == 0 and again["skipped"] == 9

    # delete two label chunks and one confidence chunk (other blocks): exactly those blocks are redone
    labels_files = _chunk_files(store, "ens", "labels")
    conf_files = _chunk_files(store, "ens", "confidence")
    for f in [labels_files[0], labels_files[4], conf_files[8]]:
        f.unlink()
    third = predict_to_store(store, "im", cfg, **kw)
    assert third["computed"] == 3
    redo = {k: v.compute() for k, v in store.predictions("ens", "im").items()}
    for k in outs:
        np.testing.assert_array_equal(redo[k], outs[k])

    # a run killed after writing a block's outputs but before its marker: that block is redone
    g["done"][1, 2] = 0
    assert predict_to_store(store, "im", cfg, **kw)["computed"] == 1

    forced = predict_to_store(store, "im", cfg, **{**kw, "overwrite": True})
    assert forced["computed"] == 9
    np.testing.assert_array_equal(store.predictions("ens", "im")["labels"].compute(), outs["labels"])


def test_predict_to_store_without_client_and_changed_settings(tmp_path, tiny_unet_path):
    store, img = make_store(tmp_path, shape=(70, 90), chunk=32)
    tile = InferenceConfig(mode="tile", tile_size=32)
    a = predict_to_store(store, "im", tile, models=[tiny_unet_path], model_name="m")
    assert a["computed"] == 9 and "uncertainty" not in store.prediction_group("m", "im")
    # the batch size does not change the numbers: nothing to redo
    assert predict_to_store(store, "im", dataclasses.replace(tile, batch_size=3), models=[tiny_unet_path],
                            model_name="m")["computed"] == 0
    gaussian = InferenceConfig(mode="gaussian", stride=16)
    b = predict_to_store(store, "im", gaussian, models=[tiny_unet_path], model_name="m")
    assert b["computed"] == 9  # new settings: everything recomputed
    ref_fn, meta = keras_fn(tiny_unet_path)
    geom = geometry(dataclasses.replace(gaussian, patch_size=meta["patch_size"]), multiple=meta["multiple"])
    ref = reference_predict(apply_norm(img, store.norm("im")), predict_fn=ref_fn, geom=geom)
    np.testing.assert_array_equal(store.predictions("m", "im")["labels"].compute(), ref.argmax(-1))


def test_blocks_of_several_chunks_give_the_same_window_results(tmp_path, tiny_unet_path):
    store, _ = make_store(tmp_path, shape=(100, 90), chunk=32)
    cfg = InferenceConfig(mode="average", stride=16)
    one = predict_to_store(store, "im", cfg, models=[tiny_unet_path], model_name="a")
    four = predict_to_store(store, "im", dataclasses.replace(cfg, block_size=64), models=[tiny_unet_path],
                            model_name="b")
    assert (one["blocks"], four["blocks"]) == (4 * 3, 2 * 2)
    np.testing.assert_array_equal(store.predictions("a", "im")["labels"].compute(),
                                  store.predictions("b", "im")["labels"].compute())
    with pytest.raises(ConfigError, match="multiple of the SEM chunk"):
        predict_to_store(store, "im", dataclasses.replace(cfg, block_size=48), models=[tiny_unet_path],
                         model_name="c")


def test_halo_from_map_overlap_gives_the_same_outputs(tmp_path, tiny_ensemble_paths, monkeypatch):
    import semscale.inference.to_store as to_store

    store, _ = make_store(tmp_path, shape=(90, 70), chunk=32)
    for mode, stride in (("tile", None), ("gaussian", 16)):
        cfg = InferenceConfig(mode=mode, stride=stride, tile_size=32, probabilities=True)
        predict_to_store(store, "im", cfg, models=tiny_ensemble_paths, model_name=f"reads-{mode}")
        monkeypatch.setattr(to_store, "_HALO_READS", False)
        predict_to_store(store, "im", cfg, models=tiny_ensemble_paths, model_name=f"overlap-{mode}")
        monkeypatch.setattr(to_store, "_HALO_READS", True)
        a, b = store.predictions(f"reads-{mode}", "im"), store.predictions(f"overlap-{mode}", "im")
        assert set(a) == set(b) == {"labels", "confidence", "uncertainty", "probabilities", "members"}
        for name in a:
            np.testing.assert_array_equal(a[name].compute(), b[name].compute())


def test_models_by_name_in_the_store(tmp_path, tiny_unet_path):
    store, _ = make_store(tmp_path, shape=(40, 40), chunk=32)
    store.model_dir("mine", create=True)
    for kind, src in (("model", tiny_unet_path), ("sidecar", tiny_unet_path.with_suffix(".json"))):
        shutil.copy(src, store.member_file("mine", 0, kind))
    res = predict_to_store(store, "im", InferenceConfig(), models="mine")
    assert res["model"] == "mine" and store.has_predictions("mine", "im")
    with pytest.raises(ConfigError, match="model_name"):
        predict_to_store(store, "im", InferenceConfig(), models=[tiny_unet_path])


def test_models_load_once_per_worker_process(tmp_path, tiny_unet_path):
    """Real worker processes: each loads the model from its path once, however many blocks it runs."""
    from distributed import Client

    from tests.loopback import local_cluster

    store, _ = make_store(tmp_path, shape=(128, 160), chunk=32)
    with local_cluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, \
            Client(cluster) as c:
        res = predict_to_store(store, "im", InferenceConfig(mode="tile"), models=[tiny_unet_path], model_name="m",
                               client=c)
        counts = c.run(lambda: __import__("semscale.training.unet", fromlist=["x"]).LOAD_COUNT)
    assert res["computed"] == 20
    assert sorted(counts.values()) in ([1, 1], [0, 1])


@pytest.mark.slow
def test_a_worker_killed_mid_predict_changes_no_bit(tmp_path, tiny_unet_path):
    """One of two worker processes SIGKILLed while blocks are being predicted: the run completes on the
    other (the lost tasks are rerun) and every output equals an undisturbed run's."""
    from distributed import Client

    from tests.loopback import WorkerKiller, local_cluster

    cfg = InferenceConfig(mode="average", stride=16)
    store, _ = make_store(tmp_path, shape=(384, 320), chunk=32)
    predict_to_store(store, "im", cfg, models=[tiny_unet_path], model_name="calm")
    want = {k: v.compute() for k, v in store.predictions("calm", "im").items()}

    def some_done() -> bool:
        done = np.asarray(store.prediction_group("hit", "im")["done"][...])
        return 2 <= int((done != 0).sum()) < done.size // 2

    with local_cluster(n_workers=2, threads_per_worker=1, processes=True) as cluster, Client(cluster) as client:
        with WorkerKiller(client, some_done) as killer:
            out = predict_to_store(store, "im", cfg, models=[tiny_unet_path], model_name="hit", client=client)
    assert killer.killed is not None, "the run ended before a worker could be killed"
    # a block the killed worker had finished (outputs and marker written, result lost) is not counted again
    assert out["blocks"] - 2 <= out["computed"] <= out["blocks"]
    got = {k: v.compute() for k, v in store.predictions("hit", "im").items()}
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
