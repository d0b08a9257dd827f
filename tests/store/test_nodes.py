"""Typed node access: the wrong kind of node is a clear StoreError, attrs merge."""

from __future__ import annotations

import pytest
import zarr

from semscale.errors import StoreError
from semscale.store.nodes import array_at, attrs_of, group_at, set_attrs


def test_kinds_and_attrs(tmp_path) -> None:
    root = zarr.open_group(str(tmp_path / "n.zarr"), mode="w")
    root.create_group("g")
    root.create_array("a", shape=(2,), dtype="int8")
    assert isinstance(group_at(root, "g"), zarr.Group) and isinstance(array_at(root, "a"), zarr.Array)
    with pytest.raises(StoreError, match="Expected a Zarr group at `a`"):
        group_at(root, "a")
    with pytest.raises(StoreError, match="Expected a Zarr array at `g`"):
        array_at(root, "g")
    assert attrs_of(root["g"]) == {}
    set_attrs(root["g"], x=1)
    assert set_attrs(root["g"], y=2) == {"x": 1, "y": 2} == attrs_of(group_at(root, "g"))
