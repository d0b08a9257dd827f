"""The robustness sweep: degradations that are blockwise exactly the whole-image ones, noise as its formula
says, and an unperturbed case that scores exactly what the pipeline's own prediction scores."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from semscale.analysis.robustness import Window, degraded, reference_resampled, robustness_sweep
from semscale.config import InferenceConfig, RobustnessConfig

CFG = RobustnessConfig(seed=3)


def sem(shape: tuple[int, int] = (97, 130), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    return np.clip(ndimage.gaussian_filter(rng.normal(120, 60, shape), 2) * 3 - 240, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("kind", "value"), [("blur_sigma", 1.5), ("blur_sigma", 3.0), ("brightness", 1.4),
                                             ("magnification", 0.5), ("magnification", 0.75),
                                             ("magnification", 1.5), ("magnification", 2.0)])
def test_blockwise_equals_whole_image(kind: str, value: float) -> None:
    img = sem()
    whole = degraded(img, kind=kind, value=value, cfg=CFG, chunks=img.shape).compute()
    blocks = degraded(img, kind=kind, value=value, cfg=CFG, chunks=(20, 33)).compute()
    assert blocks.dtype == np.uint8 and whole.shape == blocks.shape
    np.testing.assert_array_equal(blocks, whole)
    if kind == "magnification":
        assert whole.shape == (round(97 * value), round(130 * value))


def test_identity_cases_return_the_image() -> None:
    img = sem()
    for kind, value in (("blur_sigma", 0.0), ("brightness", 1.0), ("magnification", 1.0)):
        np.testing.assert_array_equal(degraded(img, kind=kind, value=value, cfg=CFG, chunks=(32, 32)).compute(), img)
    quiet = RobustnessConfig(photons=0)
    np.testing.assert_array_equal(degraded(img, kind="noise_sigma", value=0.0, cfg=quiet, chunks=(32, 32)).compute(),
                                  img)


def test_blur_matches_scipy_and_brightness_clips() -> None:
    from scipy.ndimage import gaussian_filter

    img = sem()
    want = np.clip(np.rint(gaussian_filter(img.astype(float), 2.0, mode="reflect")), 0, 255)
    np.testing.assert_array_equal(degraded(img, kind="blur_sigma", value=2.0, cfg=CFG, chunks=(40, 40)).compute(), want)
    bright = degraded(img, kind="brightness", value=1.4, cfg=CFG, chunks=(40, 40)).compute()
    np.testing.assert_array_equal(bright, np.clip(np.rint(img * 1.4), 0, 255))


def test_gauss_poisson_noise_has_the_formula_s_mean_and_variance() -> None:
    flat = np.full((400, 400), 102, np.uint8)  # I = 0.4
    out = degraded(flat, kind="noise_sigma", value=0.05, cfg=CFG, chunks=(100, 100)).compute().astype(float) / 255
    # Var = I/C + σ² (+ the rounding to 8 bits, 1/12 grey level²)
    var = 0.4 / 255 + 0.05**2 + 1 / 12 / 255**2
    assert abs(out.mean() - 0.4) < 0.002
    assert abs(out.var() / var - 1) < 0.03
    again = degraded(flat, kind="noise_sigma", value=0.05, cfg=CFG, chunks=(100, 100)).compute()
    np.testing.assert_array_equal(again, (out * 255).round().astype(np.uint8))
    other = degraded(flat, kind="noise_sigma", value=0.05, cfg=RobustnessConfig(seed=4), chunks=(100, 100)).compute()
    assert not np.array_equal(other, again)


def test_labels_are_resampled_nearest() -> None:
    lab = np.arange(12, dtype=np.uint8).reshape(3, 4)
    up = reference_resampled(lab, factor=2.0, chunks=(2, 3)).compute()
    np.testing.assert_array_equal(up, np.repeat(np.repeat(lab, 2, 0), 2, 1))
    big = np.repeat(np.repeat(lab, 2, 0), 2, 1)
    np.testing.assert_array_equal(reference_resampled(big, factor=0.5, chunks=(2, 2)).compute(), lab)


def test_a_window_is_a_central_crop() -> None:
    img = sem((50, 60))
    w = Window(img, 20)
    assert w.shape == (20, 20) and w.origin == (15, 20)
    np.testing.assert_array_equal(w[slice(0, 20), slice(0, 20)], img[15:35, 20:40])
    assert Window(img, None).shape == img.shape


def _store_with_truth(tmp_path: Path):
    from semscale.kernels.norm import histogram, norm_from_histogram
    from semscale.store import create_store

    store = create_store(tmp_path / "c.zarr", name="r", pixel_size_um=0.05)
    rng = np.random.default_rng(1)
    for k, image_id in enumerate(("a", "b")):
        img = sem((96, 128), seed=k)
        store.create_image(image_id, shape=img.shape, dtype=np.uint8, chunks=48,
                           attrs={"oxidation_min": float(k), "sample": "A", "role": "predict"})[:] = img
        store.finish_image(image_id, norm=norm_from_histogram(histogram(img, nbins=256)))
        store.write_labels(image_id, "truth", rng.integers(0, 4, img.shape).astype(np.uint8))
    return store


def test_the_unperturbed_cases_score_what_the_pipeline_predicts(tmp_path: Path, tiny_unet_path: Path) -> None:
    from semscale.analysis.metrics import score
    from semscale.inference import predict_to_store

    store = _store_with_truth(tmp_path)
    inference = InferenceConfig(mode="tile")
    cfg = RobustnessConfig(blur_sigma=(0.0, 2.0), brightness=(1.0,), noise_sigma=(0.05,), magnification=(1.0, 0.5))
    ds = robustness_sweep(store, cfg, inference, models=[tiny_unet_path], model_name="tiny")
    assert ds.sizes == {"case": 6, "image": 2}
    assert ds["perturbation"].values.tolist()[:3] == ["blur_sigma", "blur_sigma", "brightness"]
    assert ds["reference"].values.tolist() == ["truth", "truth"]
    for image_id in ("a", "b"):
        predict_to_store(store, image_id, inference, models=[tiny_unet_path], model_name="tiny")
        want = score(store.labels(image_id, "truth"), store.prediction_labels("tiny", image_id),
                     classes=store.classes, boundary_px=None)["accuracy"]
        got = ds["accuracy"].sel(image=image_id).values
        assert got[0] == pytest.approx(want, abs=1e-12)  # blur 0
        assert got[2] == pytest.approx(want, abs=1e-12)  # brightness 1
        assert got[4] == pytest.approx(want, abs=1e-12)  # magnification 1
        assert got[1] != pytest.approx(want, abs=1e-9)   # blur 2 changes the prediction
    store.write_robustness("tiny", ds)
    back = store.read_robustness("tiny")
    np.testing.assert_array_equal(back["accuracy"].values, ds["accuracy"].values)
    assert store.robustness_models() == ["tiny"]


def test_a_crop_bounds_the_sweep(tmp_path: Path, tiny_unet_path: Path) -> None:
    store = _store_with_truth(tmp_path)
    cfg = RobustnessConfig(blur_sigma=(0.0,), brightness=(), noise_sigma=(), magnification=(2.0,), crop=64)
    whole_sem = da.from_zarr(store.sem_array("a"))
    assert whole_sem.shape == (96, 128)
    ds = robustness_sweep(store, cfg, InferenceConfig(mode="tile"), models=[tiny_unet_path], model_name="tiny")
    assert ds.attrs["crop_px"] == 64 and np.isfinite(ds["accuracy"].values).all()
