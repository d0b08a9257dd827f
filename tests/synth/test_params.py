"""Tests of semscale.synth.params: labels, the calibration target and the SimParams record."""

from __future__ import annotations

import dataclasses
import json

import pytest

import semscale
from semscale.errors import ConfigError
from semscale.synth.params import (
    DEFAULT_PARAMS,
    ELEMENTS,
    NI,
    NIO,
    PHASES,
    PORE,
    REAL_PATCH,
    YSZ,
    SimParams,
)


def test_labels_match_the_package_classes() -> None:
    assert PHASES == semscale.CLASSES
    assert [PHASES[k] for k in (PORE, NIO, NI, YSZ)] == ["pore", "NiO", "Ni", "YSZ"]
    assert list(REAL_PATCH) == list(PHASES)
    assert sum(row["fraction"] for row in REAL_PATCH.values()) == pytest.approx(1.0)


def test_sim_params_frozen_hashable_and_json() -> None:
    p = SimParams()
    assert p == DEFAULT_PARAMS and hash(p) == hash(DEFAULT_PARAMS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.psf_sigma_px = 1.0  # type: ignore[misc]
    d = json.loads(json.dumps(p.to_dict()))
    assert d["eds_conc"][ELEMENTS.index("Zr")][YSZ] == p.eds_conc[2][YSZ]
    rebuilt = SimParams(**{k: _tuples(v) for k, v in d.items()})
    assert rebuilt == p
    q = dataclasses.replace(p, base=(0.0, 90.0, 120.0, 150.0))
    assert q != p and q.base[NIO] == 90.0


def _tuples(v: object) -> object:
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"base": (0.0, 97.5, 117.5)}, r"4 values \(one per phase\) for `SimParams\.base`"),
        ({"eds_rate": (1.0, 2.0, 3.0, 4.0)}, r"3 values \(one per element\) for `SimParams\.eds_rate`"),
        ({"texture_amp": ((0.0,), (1.0,), (2.0,), (3.0,))}, r"one per phase, each 3 values\) for `SimParams\.texture_amp`"),
        ({"porosity_range": (0.4, 0.3)}, r"porosity_range"),
    ],
)
def test_sim_params_checked_when_built(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SimParams(**change)
