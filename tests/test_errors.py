"""Every semscale error is a SemscaleError and the matching built-in, so callers catch either."""

from __future__ import annotations

import pytest

from semscale import errors


@pytest.mark.parametrize("cls, builtin", [
    (errors.ConfigError, ValueError), (errors.InputImageError, ValueError), (errors.StoreError, KeyError),
    (errors.ModelError, ValueError), (errors.DependencyError, ImportError),
])
def test_errors_inherit_the_builtin(cls, builtin) -> None:
    with pytest.raises(builtin):
        raise cls("Expected X. Got Y.")
    with pytest.raises(errors.SemscaleError, match="Expected X"):
        raise cls("Expected X. Got Y.")
