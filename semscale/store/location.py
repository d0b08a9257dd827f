"""Where a campaign store lives: a local folder or an fsspec URL (``s3://bucket/campaign.zarr``, ``memory://``).

A local store is a :class:`pathlib.Path`; any other is a :class:`upath.UPath` over its fsspec filesystem, so
the store's code joins, lists and reads both alike. The few operations that differ between a folder and an
object store live here and nowhere else:

* the Zarr store object (:func:`zarr_store`);
* files that libraries must see on local disk (Keras models, pickled forests): :func:`local_copy` for reading,
  :func:`writing` for writing, which replaces the file atomically (``os.replace``) or uploads it in one PUT;
* an exclusive create for the writer lock (:func:`create_exclusive`): a whole temporary file hard-linked to
  its name on disk (``link`` refuses an existing name), a conditional PUT (``If-None-Match: *``) on S3;
* listing, removal and the writability check.

Credentials and endpoints of object stores come from the filesystem's own environment (for S3:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, or a profile), so a config and the
workers of a cluster name a store by its URL alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeAlias

from upath import UPath

from semscale.errors import StoreError

__all__ = [
    "PATH_TYPES", "StorePath", "create_exclusive", "is_remote", "list_files", "local_copy", "remove_tree", "store_path",
    "writable", "writing", "zarr_store",
]

StorePath: TypeAlias = Path | UPath
"""A store location: a local :class:`~pathlib.Path`, or a :class:`~upath.UPath` for any other fsspec URL."""
PATH_TYPES = (Path, UPath)
"""The classes of a :data:`StorePath`, for ``isinstance``."""

_OPTIONS: dict[str, dict[str, Any]] = {
    # every process sees what the others wrote: no cached listings (lock files, chunks, done markers)
    "s3": {"use_listings_cache": False},
    "gs": {"cache_timeout": 0},
}


def store_path(value: str | os.PathLike[str] | UPath) -> StorePath:
    """The store location named by ``value``: a local path (absolute), ``file://…`` (local) or a URL."""
    if isinstance(value, UPath) and not isinstance(value, Path):
        return value
    text = os.fspath(value) if not isinstance(value, UPath) else str(value)
    if "://" not in text:
        return Path(text).expanduser().absolute()
    protocol = text.split("://", 1)[0].lower()
    if protocol in ("file", "local"):
        return Path(text.split("://", 1)[1]).expanduser().absolute()
    try:
        return UPath(text, **_OPTIONS.get(protocol, {}))
    except (ImportError, ValueError) as exc:
        raise StoreError(
            f"Expected a store folder, or a URL of an installed fsspec filesystem. Got `{text}` ({exc}). For "
            "s3:// install `semscale[s3]` (s3fs); other protocols need their fsspec package."
        ) from None


def is_remote(path: StorePath) -> bool:
    """True for a store that is not a local folder."""
    return not isinstance(path, Path)


def zarr_store(path: StorePath, *, read_only: bool) -> Any:
    """The Zarr v3 store object over ``path`` (``LocalStore`` or ``FsspecStore``)."""
    import zarr.storage

    if isinstance(path, Path):
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(str(path), storage_options=dict(path.storage_options),
                                             read_only=read_only)


def _fs_path(path: UPath) -> str:
    return str(path.path)


@contextlib.contextmanager
def local_copy(path: StorePath) -> Iterator[Path]:
    """A local file holding ``path``'s bytes for the ``with`` block (``path`` itself when local)."""
    if isinstance(path, Path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="semscale-") as tmp:
        local = Path(tmp) / path.name
        path.fs.get_file(_fs_path(path), str(local))
        yield local


@contextlib.contextmanager
def writing(path: StorePath) -> Iterator[Path]:
    """A local file to write ``path``'s new content into; on a clean exit it replaces ``path`` whole
    (``os.replace`` beside it, or one upload), so readers see the old file or the new one, never a part."""
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary name keeps the suffix: Keras picks the format by it
        tmp = path.with_name(f"tmp_{os.getpid()}_{path.name}")
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    with tempfile.TemporaryDirectory(prefix="semscale-") as folder:
        tmp = Path(folder) / path.name
        yield tmp
        path.fs.put_file(str(tmp), _fs_path(path))


def create_exclusive(path: StorePath, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists (atomic); False when it was there already.

    Whoever reads ``path`` finds it absent or whole, even when the creator is killed midway: on disk the data
    go to a private temporary file first, which is then hard-linked to ``path`` (``link`` fails when ``path``
    exists, like ``O_EXCL``); on object storage the PUT is both conditional and atomic."""
    if isinstance(path, Path):
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: exclusive create, then write
                return _create_excl(path, data)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True
    try:
        path.fs.pipe_file(_fs_path(path), data, mode="create")
    except FileExistsError:
        return False
    return True


def _create_excl(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def remove_tree(path: StorePath) -> None:
    """Delete the folder (or prefix) ``path`` with everything below it; nothing when absent."""
    if isinstance(path, Path):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        return
    with contextlib.suppress(FileNotFoundError):
        path.fs.rm(_fs_path(path), recursive=True)


def list_files(path: StorePath) -> set[str]:
    """The files below ``path``, as ``/``-separated paths relative to it (empty when absent)."""
    if isinstance(path, Path):
        return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} if path.is_dir() else set()
    root = _fs_path(path).rstrip("/")
    try:
        found = path.fs.find(root)
    except FileNotFoundError:
        return set()
    return {f[len(root) + 1:] for f in found if f.startswith(root + "/")}


def writable(path: StorePath) -> bool:
    """Whether this process may write below ``path`` (a local folder's permissions; object stores say so
    only when a write is tried, so they count as writable here)."""
    return os.access(path, os.W_OK) if isinstance(path, Path) else True
