"""Coercion from YAML values and the messages that name the key, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from semscale.config import ClusterConfig, InferenceConfig, TrainingConfig, choices
from semscale.config.validation import _build_section, _coerce, _FieldError


def test_coerce_converts_what_yaml_gives() -> None:
    assert _coerce(3, float, "k") == 3.0 and isinstance(_coerce(3, float, "k"), float)
    assert _coerce([1, 2], tuple[int, ...], "k") == (1, 2)
    assert _coerce(None, int | None, "k") is None
    assert _coerce("a/b", Path, "k") == Path("a/b")
    assert _coerce(7, str, "k") == "7"
    with pytest.raises(_FieldError, match=r"`k`: expected an integer, got True \(bool\)"):
        _coerce(True, int, "k")
    with pytest.raises(_FieldError, match=r"`k\[1\]`"):
        _coerce([1, "x"], tuple[int, ...], "k")
    with pytest.raises(_FieldError, match="one of 'a', 'b'"):
        _coerce("c", Literal["a", "b"], "k")


def test_switches_accept_yaml_booleans() -> None:
    assert _build_section(ClusterConfig, {"gpu": False}, "cluster").gpu == "off"
    assert _build_section(TrainingConfig, {"mixed_precision": True}, "training").mixed_precision == "on"
    with pytest.raises(_FieldError, match="cluster.gpu"):
        _build_section(ClusterConfig, {"gpu": "maybe"}, "cluster")
    with pytest.raises(_FieldError, match=r"cluster.gpus`: unknown key \(known keys: address"):
        _build_section(ClusterConfig, {"gpus": 1}, "cluster")


def test_choices_read_the_literal_types() -> None:
    assert choices(InferenceConfig, "mode") == ("average", "gaussian", "tile")
    assert choices(ClusterConfig, "gpu") == ("auto", "on", "off")
    with pytest.raises(TypeError, match="Literal-typed"):
        choices(InferenceConfig, "tta")
