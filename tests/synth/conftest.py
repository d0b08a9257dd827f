"""Fixtures of the simulator tests: one microstructure at three oxidation times, and its realism table."""

from __future__ import annotations

from typing import Any

import pytest

from semscale.synth import SynthImage, realism_table, simulate

SHAPE = (320, 384)


@pytest.fixture(scope="session")
def series() -> dict[int, SynthImage]:
    """One microstructure (seed 7) at three oxidation times."""
    return {t: simulate(SHAPE, oxidation_min=t, seed=7) for t in (0, 30, 120)}


@pytest.fixture(scope="session")
def pooled(series: dict[int, SynthImage]) -> dict[str, Any]:
    return realism_table(
        [series[0], series[30], series[120], simulate(SHAPE, oxidation_min=20, seed=8)]
    )
