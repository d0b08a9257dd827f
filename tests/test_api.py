"""The public API: guessable names, exported lazily, typed."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import semscale


def test_public_names_resolve_to_their_stage_functions() -> None:
    from semscale.config import load_config
    from semscale.pipeline import run_campaign
    from semscale.store import open_store

    assert semscale.load_config is load_config
    assert semscale.open_store is open_store
    assert semscale.run_campaign is run_campaign
    assert callable(semscale.predict) and callable(semscale.segment_array)
    assert set(dir(semscale)) >= {"load_config", "open_store", "run_campaign", "predict", "segment_array"}


def test_import_is_lazy() -> None:
    code = "import sys, semscale; print(any(m in sys.modules for m in ('zarr', 'keras', 'tensorflow', 'dask')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_predict_options_are_keyword_only() -> None:
    for fn in (semscale.predict, semscale.segment_array):
        params = list(inspect.signature(fn).parameters.values())
        assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), fn.__name__
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def test_package_ships_type_information() -> None:
    assert (Path(semscale.__file__).parent / "py.typed").is_file()


def test_store_repr_is_readable(tmp_path) -> None:
    import numpy as np

    store = semscale.open_store(_store(tmp_path, np))
    text = repr(store)
    assert text.startswith("<CampaignStore 'c' at ") and "1 images [im]" in text and "writable" in text


def _store(tmp_path, np):
    from semscale.store import create_store

    s = create_store(tmp_path / "c.zarr", name="c", pixel_size_um=0.1)
    s.create_image("im", shape=(8, 8), dtype=np.uint8, chunks=8)[:] = 1
    s.finish_image("im", norm={"lo": 0.0, "hi": 1.0})
    return s.path
