"""Tests of semscale.synth.simulate: contract, determinism, oxidation law, and bit-identity with the
simulator as it was before the package split (commit f892ada)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from semscale import synth
from semscale.errors import SemscaleError
from semscale.synth import NI, NIO, PORE, YSZ, SynthImage, realism_table, simulate
from semscale.synth.params import SimParams

ORIGINAL_COMMIT = "f892ada"
"""The last commit with the single-module simulator; its output is what the split must reproduce."""


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
    with pytest.raises(ValueError, match=match) as info:
        simulate(shape, **kwargs)
    assert isinstance(info.value, SemscaleError)


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




def test_oxidised_fraction_follows_its_params() -> None:
    slow = SimParams(ox_tau_min=100.0)
    assert synth.oxidised_fraction(50.0, params=slow) < synth.oxidised_fraction(50.0)
    assert synth.oxidised_fraction(1e6, params=SimParams(ox_max=0.5)) == pytest.approx(0.5)


def test_other_params_change_the_image_and_are_recorded() -> None:
    a = simulate((96, 112), oxidation_min=30, seed=2)
    p = dataclasses.replace(SimParams(), psf_sigma_px=2.0)
    b = simulate((96, 112), oxidation_min=30, seed=2, params=p)
    np.testing.assert_array_equal(a.truth, b.truth)  # the PSF acts on the SEM only
    assert not np.array_equal(a.sem, b.sem)
    assert "params" not in a.meta
    assert b.meta["params"]["psf_sigma_px"] == 2.0 and b.meta["psf_sigma_px"] == 2.0
    assert json.loads(json.dumps(b.meta))["params"] == p.to_dict()


# -- bit-identity with the simulator before the split ------------------------------------------------
def _original_module(tmp_path: Path) -> ModuleType:
    """The single-module simulator of ORIGINAL_COMMIT, imported from a file in ``tmp_path``."""
    root = Path(__file__).resolve().parents[2]
    src = subprocess.run(
        ["git", "-C", str(root), "show", f"{ORIGINAL_COMMIT}:semscale/synth/__init__.py"],
        check=True, capture_output=True, text=True,
    ).stdout
    path = tmp_path / "synth_original.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("synth_original", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["synth_original"] = module  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["synth_original"]
    return module


def _assert_same(new: SynthImage, old: SynthImage) -> None:
    np.testing.assert_array_equal(new.sem, old.sem)
    assert new.sem.dtype == old.sem.dtype
    np.testing.assert_array_equal(new.truth, old.truth)
    assert new.eds.keys() == old.eds.keys()
    for el in old.eds:
        np.testing.assert_array_equal(new.eds[el], old.eds[el])
    assert new.eds_factor == old.eds_factor
    assert json.dumps(new.meta) == json.dumps(old.meta)  # same keys, order and values


@pytest.mark.parametrize(
    "kwargs",
    [
        {"oxidation_min": 0.0, "seed": 5},
        {"oxidation_min": 30.0, "seed": 5},
        {"oxidation_min": 120.0, "seed": 9, "eds_factor": 3, "bit_depth": 16},
    ],
)
def test_bit_identical_to_the_original_simulator(tmp_path: Path, kwargs: dict) -> None:
    old = _original_module(tmp_path)
    shape = (97, 130)
    _assert_same(simulate(shape, **kwargs), old.simulate(shape, **kwargs))


def test_realism_and_campaign_identical_to_the_original(tmp_path: Path) -> None:
    old = _original_module(tmp_path)
    from semscale.synth import write_campaign

    ims = [simulate((80, 88), oxidation_min=t, seed=3) for t in (0, 20)]
    assert json.dumps(realism_table(ims)) == json.dumps(old.realism_table(ims))
    np.testing.assert_array_equal(synth.context_codes(ims[1].sem), old.context_codes(ims[1].sem))
    assert [synth.oxidised_fraction(t) for t in (0, 7, 50)] == [
        old.oxidised_fraction(t) for t in (0, 7, 50)
    ]
    kw = {"n_images": 4, "shape": (40, 48), "times": (0, 2.5), "samples": ("A", "b"), "seed": 4}
    new_dir, old_dir = tmp_path / "new", tmp_path / "old"
    write_campaign(new_dir, **kw)
    old.write_campaign(old_dir, **kw)
    new_files = sorted(p.relative_to(new_dir) for p in new_dir.rglob("*") if p.is_file())
    assert new_files == sorted(p.relative_to(old_dir) for p in old_dir.rglob("*") if p.is_file())
    for rel in new_files:
        assert (new_dir / rel).read_bytes() == (old_dir / rel).read_bytes(), rel
