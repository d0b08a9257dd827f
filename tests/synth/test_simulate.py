"""Tests of the SEM + EDS simulator (semscale.synth): contract, determinism, physics, realism, I/O."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from semscale import synth
from semscale.synth import NI, NIO, PORE, YSZ, SynthImage, realism_table, simulate, write_campaign

SHAPE = (320, 384)


@pytest.fixture(scope="module")
def series() -> dict[int, SynthImage]:
    """One microstructure (seed 7) at three oxidation times."""
    return {t: simulate(SHAPE, oxidation_min=t, seed=7) for t in (0, 30, 120)}


@pytest.fixture(scope="module")
def pooled(series: dict[int, SynthImage]) -> dict:
    return realism_table(
        [series[0], series[30], series[120], simulate(SHAPE, oxidation_min=20, seed=8)]
    )


# -- contract -------------------------------------------------------------------------------------
def test_same_seed_same_arrays_different_seed_different() -> None:
    a = simulate((256, 260), oxidation_min=10, seed=3)
    b = simulate((256, 260), oxidation_min=10, seed=3)
    c = simulate((256, 260), oxidation_min=10, seed=4)
    np.testing.assert_array_equal(a.sem, b.sem)
    np.testing.assert_array_equal(a.truth, b.truth)
    assert a.eds.keys() == b.eds.keys() == {"Ni", "O", "Zr"}
    for el in a.eds:
        np.testing.assert_array_equal(a.eds[el], b.eds[el])
    assert a.meta == b.meta
    assert not np.array_equal(a.sem, c.sem)
    assert (a.truth != c.truth).mean() > 0.2
    assert a.meta["eds_shift_px"] != c.meta["eds_shift_px"]


@pytest.mark.parametrize(("shape", "factor"), [((301, 457), 4), ((257, 131), 3), ((64, 81), 1)])
def test_any_shape_and_eds_shape(shape: tuple[int, int], factor: int) -> None:
    im = simulate(shape, oxidation_min=5, seed=1, eds_factor=factor)
    assert im.sem.shape == im.truth.shape == shape
    expected = (-(-shape[0] // factor), -(-shape[1] // factor))
    assert {el: a.shape for el, a in im.eds.items()} == {el: expected for el in ("Ni", "O", "Zr")}
    assert im.eds_factor == factor == im.meta["eds_factor"]


def test_dtypes_ranges_and_meta(series: dict[int, SynthImage]) -> None:
    im = series[30]
    assert im.sem.dtype == np.uint8 and im.truth.dtype == np.uint8
    assert set(np.unique(im.truth)) == {PORE, NIO, NI, YSZ}
    assert all(a.dtype == np.uint16 for a in im.eds.values())
    assert im.sem.min() < 10 and im.sem.max() > 200  # uses the 8-bit range
    m = im.meta
    for key in ("seed", "oxidation_min", "pixel_size_um", "eds_shift_px", "fractions", "porosity"):
        assert key in m
    assert (
        m["seed"] == 7 and m["oxidation_min"] == 30 and m["pixel_size_um"] == pytest.approx(0.04458)
    )
    assert sum(m["fractions"].values()) == pytest.approx(1.0)
    assert m["fractions"]["NiO"] == pytest.approx((im.truth == NIO).mean())
    dy, dx = m["eds_shift_px"]
    assert max(abs(dy), abs(dx)) <= 0.6 * im.eds_factor + 1e-9
    assert 1.5 <= m["mean_grain_diameter_um"] <= 4.0


def test_with_eds_false_keeps_the_sem() -> None:
    a = simulate((200, 240), oxidation_min=20, seed=2, with_eds=True)
    b = simulate((200, 240), oxidation_min=20, seed=2, with_eds=False)
    assert b.eds == {}
    np.testing.assert_array_equal(a.sem, b.sem)
    np.testing.assert_array_equal(a.truth, b.truth)


def test_sixteen_bit() -> None:
    a = simulate((200, 240), oxidation_min=20, seed=2, with_eds=False)
    b = simulate((200, 240), oxidation_min=20, seed=2, with_eds=False, bit_depth=16)
    assert b.sem.dtype == np.uint16 and b.sem.max() > 255
    assert np.abs(np.rint(b.sem / 257.0) - a.sem.astype(float)).max() <= 1
    assert b.meta["bit_depth"] == 16
    # realism_table works in 8-bit grey levels whatever the depth.
    assert realism_table([b])["phases"]["YSZ"]["mean"] == pytest.approx(
        realism_table([a])["phases"]["YSZ"]["mean"], abs=0.5
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bit_depth": 12}, "bit_depth"),
        ({"eds_factor": 0}, "eds_factor"),
        ({"oxidation_min": -1.0}, "oxidation_min"),
        ({"pixel_size_um": 0.0}, "pixel_size_um"),
        ({"shape": (8, 100)}, "shape"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    shape = kwargs.pop("shape", (64, 64))
    with pytest.raises(ValueError, match=match):
        simulate(shape, **kwargs)


# -- physics ----------------------------------------------------------------------------------------
def test_nio_grows_monotonically_and_porosity(series: dict[int, SynthImage]) -> None:
    nio = {t: im.meta["fractions"]["NiO"] for t, im in series.items()}
    pore = {t: im.meta["fractions"]["pore"] for t, im in series.items()}
    assert nio[0] == 0.0
    assert 0.0 < nio[30] < nio[120]
    assert series[120].meta["oxidised_ni_fraction"] > 0.5  # most of the Ni oxidised at 120 min
    assert series[30].meta["oxidised_ni_fraction"] < series[120].meta["oxidised_ni_fraction"]
    assert 0.27 <= pore[0] <= 0.42
    assert pore[120] < pore[0]  # NiO (×1.7 volume) grows into the pores
    # Same microstructure at every time: the YSZ never changes, NiO only replaces Ni or pore.
    np.testing.assert_array_equal(series[0].truth == YSZ, series[120].truth == YSZ)
    assert np.all(np.isin(series[0].truth[series[120].truth == NIO], [PORE, NI]))
    # NiO grows from the Ni surfaces: at 30 min NiO touches the former pores, the Ni core is left.
    t0, t30 = series[0].truth, series[30].truth
    assert (t30[t0 == NI] == NI).mean() > 0.3


def test_oxidised_fraction_law() -> None:
    xs = [synth.oxidised_fraction(t) for t in (0, 2, 5, 10, 20, 30, 120)]
    assert xs[0] == 0.0 and all(b > a for a, b in zip(xs, xs[1:], strict=False)) and xs[-1] > 0.5


def test_ysz_is_a_connected_matrix() -> None:
    largest = []
    for seed in (1, 2, 4):
        ysz = simulate((400, 400), seed=seed, with_eds=False).truth == YSZ
        lab, _ = ndi.label(ysz)
        sizes = np.bincount(lab.ravel())[1:]
        largest.append(sizes.max() / sizes.sum())
    assert np.mean(largest) > 0.5


def test_pores_from_specks_to_voids(series: dict[int, SynthImage]) -> None:
    lab, _ = ndi.label(series[0].truth == PORE)
    sizes = np.bincount(lab.ravel())[1:]
    px_um2 = 0.04458**2
    assert sizes.min() * px_um2 < 0.3  # sub-µm specks
    assert sizes.max() * px_um2 > 4.0  # voids of several µm


# -- SEM realism: grey levels overlap, context decides ---------------------------------------------
def test_grey_level_order_and_calibration(pooled: dict) -> None:
    ph = pooled["phases"]
    means = [ph[name]["mean"] for name in ("pore", "NiO", "Ni", "YSZ")]
    assert means == sorted(means)
    for name, real in synth.REAL_PATCH.items():
        assert ph[name]["mean"] == pytest.approx(real["mean"], abs=8.0), name
        assert ph[name]["std"] == pytest.approx(real["std"], abs=6.0), name


def test_grey_level_alone_is_not_enough_but_context_is(pooled: dict) -> None:
    grey, grey_ni_ysz = (
        pooled["best_grey_level_accuracy"],
        pooled["best_grey_level_accuracy_ni_ysz"],
    )
    assert 0.6 < grey < 0.85
    assert 0.6 < grey_ni_ysz < 0.85  # Ni and YSZ overlap in grey level
    ctx, ctx_ni_ysz = pooled["context_feature_accuracy"], pooled["context_feature_accuracy_ni_ysz"]
    assert ctx > grey + 0.08
    assert ctx_ni_ysz > 0.9 and ctx_ni_ysz > grey_ni_ysz + 0.12


def test_bayes_accuracy_is_an_upper_bound_of_a_threshold(series: dict[int, SynthImage]) -> None:
    im = series[0]
    two = (im.truth == NI) | (im.truth == YSZ)
    g, t = im.sem[two].astype(int), im.truth[two]
    best_threshold = max(((g >= k) == (t == YSZ)).mean() for k in range(0, 256, 4))
    table = realism_table([im])
    assert table["best_grey_level_accuracy_ni_ysz"] >= best_threshold - 1e-12


# -- EDS ----------------------------------------------------------------------------------------------
def _per_phase_counts(im: SynthImage, el: str) -> np.ndarray:
    """Counts per EDS pixel of pure pore, NiO, Ni, YSZ: least squares of the counts on the phase
    fractions of each EDS pixel's (broadened) footprint."""
    f = im.eds_factor
    h, w = im.truth.shape
    he, we = im.eds[el].shape
    cols = []
    for k in range(4):
        frac = ndi.gaussian_filter((im.truth == k).astype(float), 0.4 / 0.04458)
        frac = np.pad(frac, ((0, he * f - h), (0, we * f - w)), mode="edge")
        cols.append(frac.reshape(he, f, we, f).mean(axis=(1, 3))[2:-2, 2:-2].ravel())
    coef, *_ = np.linalg.lstsq(np.stack(cols, 1), im.eds[el][2:-2, 2:-2].ravel().astype(float))
    return coef


def test_eds_consistent_with_truth(series: dict[int, SynthImage]) -> None:
    im = series[30]
    ni, o, zr = (_per_phase_counts(im, el) for el in ("Ni", "O", "Zr"))
    assert zr[YSZ] > 10 * max(abs(zr[NI]), abs(zr[NIO]), abs(zr[PORE]), 1.0)
    assert ni[NI] > 1.4 * ni[NIO] and ni[NIO] > 5 * max(ni[YSZ], ni[PORE], 1.0)
    assert o[NIO] > 3 * max(o[NI], 1.0) and o[YSZ] > 3 * max(o[NI], 1.0)
    assert o[PORE] < 0.2 * o[YSZ] and ni[PORE] < 0.2 * ni[NI]


def test_eds_misregistration_matches_meta() -> None:
    im = simulate((301, 457), oxidation_min=30, seed=5)
    f = im.eds_factor
    h, w = im.truth.shape
    he, we = im.eds["Zr"].shape
    ysz = ndi.gaussian_filter((im.truth == YSZ).astype(float), 0.4 / 0.04458)
    scores = {}
    for sy in range(-3, 4):
        for sx in range(-3, 4):
            # Documented geometry: EDS pixel (i, j) integrates SEM rows [i*f + dy, (i+1)*f + dy).
            moved = ndi.shift(ysz, (-sy, -sx), order=0, mode="nearest")
            moved = np.pad(moved, ((0, he * f - h), (0, we * f - w)), mode="edge")
            pred = moved.reshape(he, f, we, f).mean(axis=(1, 3))[2:-2, 2:-2]
            scores[sy, sx] = np.corrcoef(pred.ravel(), im.eds["Zr"][2:-2, 2:-2].ravel())[0, 1]
    best = max(scores, key=scores.get)
    dy, dx = im.meta["eds_shift_px"]
    assert abs(best[0] - dy) <= 0.75 and abs(best[1] - dx) <= 0.75
    assert scores[best] > 0.8


# -- campaign writer ---------------------------------------------------------------------------------
def test_write_campaign(tmp_path) -> None:
    import tifffile
    import yaml

    path = write_campaign(tmp_path / "camp", n_images=3, shape=(101, 133), seed=11)
    assert path == tmp_path / "camp" / "campaign.yaml"
    text = path.read_text()
    cfg = yaml.safe_load(text)
    assert list(cfg) == ["name", "store", "pixel_size_um", "classes", "images"]
    assert cfg["name"] == "synthetic-oxidation" and cfg["store"] == "campaign.zarr"
    assert cfg["pixel_size_um"] == pytest.approx(0.04458)
    assert cfg["classes"] == ["pore", "NiO", "Ni", "YSZ"]
    images = cfg["images"]
    assert [e["id"] for e in images] == ["t000_a", "t002_a", "t005_a"]
    assert [e["oxidation_min"] for e in images] == [0, 2, 5]
    assert [e["role"] for e in images] == ["train", "predict", "train"]
    for e in images:
        assert e["sample"] == "A"
        keys = ["id", "sem", "sample", "oxidation_min", "eds", "truth", "role"]
        assert list(e) == (keys if e["role"] == "train" else [k for k in keys if k != "eds"])
        sem = tifffile.imread(path.parent / e["sem"])
        truth = tifffile.imread(path.parent / e["truth"])
        assert sem.shape == truth.shape == (101, 133) and sem.dtype == np.uint8
        assert truth.max() <= 3
        assert (path.parent / "data" / f"{e['id']}_meta.json").is_file()
        if e["role"] == "train":
            assert set(e["eds"]) == {"Ni", "O", "Zr"}
            for rel in e["eds"].values():
                assert not rel.startswith("/")
                assert tifffile.imread(path.parent / rel).shape == (26, 34)
    assert not (path.parent / "data" / "t002_a_Ni.tif").exists()
    # Deterministic, and each image has its own seed.
    again = write_campaign(tmp_path / "again", n_images=3, shape=(101, 133), seed=11)
    assert again.read_text() == text
    a = tifffile.imread(path.parent / "data" / "t000_a_sem.tif")
    np.testing.assert_array_equal(a, tifffile.imread(again.parent / "data" / "t000_a_sem.tif"))


def test_write_campaign_cycles_times_and_samples(tmp_path) -> None:
    import yaml

    path = write_campaign(
        tmp_path, n_images=5, shape=(40, 48), times=(0, 120), samples=("A", "b 2"), n_eds=2
    )
    images = yaml.safe_load(path.read_text())["images"]
    assert [e["id"] for e in images] == ["t000_a", "t120_a", "t000_b-2", "t120_b-2", "t000_a_2"]
    assert [e["sample"] for e in images] == ["A", "A", "b 2", "b 2", "A"]
    assert [e["role"] for e in images] == ["train", "predict", "predict", "predict", "train"]
    one = yaml.safe_load(write_campaign(tmp_path / "one", n_images=1, shape=(40, 48)).read_text())
    assert [e["role"] for e in one["images"]] == ["train"]
    with pytest.raises(ValueError, match="n_eds"):
        write_campaign(tmp_path / "bad", n_images=2, shape=(40, 48), n_eds=3)
