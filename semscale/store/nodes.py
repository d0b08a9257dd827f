"""Typed access to Zarr nodes and their ``semscale`` attrs (zarr types a child as ``Array | Group`` and an
attribute as JSON; these helpers check the kind once so the rest of the store is typed precisely)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import zarr

from semscale.errors import StoreError

__all__ = ["array_at", "attrs_of", "group_at", "ome_of", "set_attrs"]


def group_at(parent: zarr.Group, key: str) -> zarr.Group:
    """The group at ``key`` below ``parent`` (StoreError if it is an array)."""
    node = parent[key]
    if not isinstance(node, zarr.Group):
        raise StoreError(f"Expected a Zarr group at `{key}`. Got an array; the store is damaged.")
    return node


def array_at(parent: zarr.Group, key: str) -> zarr.Array:
    """The array at ``key`` below ``parent`` (StoreError if it is a group)."""
    node = parent[key]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"Expected a Zarr array at `{key}`. Got a group; the store is damaged.")
    return node


def attrs_of(node: zarr.Group | zarr.Array, key: str = "semscale") -> dict[str, Any]:
    """A copy of ``node.attrs[key]`` as a dict (empty if absent)."""
    raw = node.attrs.get(key, {})
    return dict(raw) if isinstance(raw, Mapping) else {}


def ome_of(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """A copy of the NGFF ``ome`` attrs of ``node``."""
    return attrs_of(node, "ome")


def set_attrs(node: zarr.Group | zarr.Array, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into ``node.attrs["semscale"]``; returns the new attrs."""
    meta = {**attrs_of(node), **values}
    node.attrs["semscale"] = meta
    return meta
