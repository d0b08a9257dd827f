"""Training throughput: windows streamed from Zarr vs from in-memory NumPy; sampler vs model speed.

Usage::

    python benchmarks/bench_train.py [--paper] [--filters 8 16 32 64] [--patch 128] [--batch 16]
                                     [--steps 15] [--epochs 3] [--workers 2] [--size 1536] [--json out.json]

Builds a small store of simulated images (chunks 1024 px, the ingest default), then measures

* the sampler alone: windows/s for one thread (``PatchDataset.batch``) and through Keras' threaded
  prefetcher (``workers`` threads), streamed from Zarr and from memory (``in_memory=True``);
* the model alone: training steps/s on one fixed in-memory batch (``train_on_batch``), i.e. the windows/s
  the sampler must deliver;
* ``model.fit`` fed by the sampler: seconds per step (median over the epochs after the first of each run;
  the two modes alternate ``--repeats`` times), streamed from Zarr vs in-memory, and their ratio (goal:
  streamed within 10 % of in-memory).

``--paper`` uses the published settings (filters 16..256, 256² patches, batch 32). Prints a table and, with
``--json``, writes the figures together with the device (Keras backend, CPU/GPU name).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def build_store(path: Path, *, size: int, n_images: int) -> object:
    from semscale.kernels.norm import histogram, norm_from_histogram
    from semscale.store import create_store
    from semscale.synth import simulate

    store = create_store(path, name="bench", pixel_size_um=0.04458)
    for k in range(n_images):
        sim = simulate((size, size), oxidation_min=20, seed=k, with_eds=False)
        a = store.create_image(f"im{k}", shape=sim.sem.shape, dtype=sim.sem.dtype, chunks=1024)
        a[:] = sim.sem
        store.finish_image(f"im{k}", role="train", norm=norm_from_histogram(histogram(sim.sem, nbins=256)))
        store.write_labels(f"im{k}", "target", sim.truth)
    return store


def device_name() -> str:
    import keras

    backend = keras.backend.backend()
    gpus = []
    if backend == "tensorflow":
        import tensorflow as tf

        for d in tf.config.list_physical_devices("GPU"):
            try:
                gpus.append(tf.config.experimental.get_device_details(d).get("device_name", d.name))
            except Exception:
                gpus.append(d.name)
    cpu = f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs visible)"
    return f"keras {keras.__version__} / {backend}; " + (", ".join(gpus) if gpus else f"CPU only: {cpu}")


def sampler_rate(ds: object, n_batches: int) -> float:
    t0 = time.perf_counter()
    for i in range(n_batches):
        ds.batch(i % len(ds), 0)
    return n_batches * ds.batch_size / (time.perf_counter() - t0)


def prefetch_rate(ds: object) -> float:
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(ds)
    adapter.on_epoch_begin()
    t0 = time.perf_counter()
    n = sum(1 for _ in adapter.get_numpy_iterator())
    dt = time.perf_counter() - t0
    adapter.on_epoch_end()
    return n * ds.batch_size / dt


def fit_step_seconds(ds: object, *, filters: tuple[int, ...], epochs: int, seed: int = 0) -> list[float]:
    """Seconds per training step of each epoch of ``model.fit`` fed by ``ds``."""
    import keras

    from semscale.training.unet import build_unet

    keras.utils.set_random_seed(seed)
    model = build_unet(filters=filters, dropout=(0.1,) * len(filters), seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
    per_epoch: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            per_epoch.append((time.perf_counter() - self.t0) / len(ds))

    ds.set_epoch(0)
    model.fit(ds, epochs=epochs, verbose=0, callbacks=[Timer()])
    return per_epoch


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paper", action="store_true", help="filters 16..256, patch 256, batch 32")
    ap.add_argument("--filters", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternating fit runs per mode")
    ap.add_argument("--size", type=int, default=1536, help="edge of each simulated image (px)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--store", type=Path, default=None, help="where to build the store (default: temp dir)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.paper:
        args.filters, args.patch, args.batch = [16, 32, 64, 128, 256], 256, 32
    return args


def model_alone(dataset: Any, args: argparse.Namespace, filters: tuple[int, ...]) -> dict[str, float]:
    """Training steps/s of the model on one fixed in-memory batch (``train_on_batch``)."""
    import keras

    from semscale.training.unet import build_unet

    model = build_unet(filters=filters, dropout=(0.1,) * len(filters), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=255))
    x, y = dataset(True).batch(0, 0)
    model.train_on_batch(x, y)
    n = max(3, args.steps // 3)
    t0 = time.perf_counter()
    for _ in range(n):
        model.train_on_batch(x, y)
    step = (time.perf_counter() - t0) / n
    return {"model_alone_s_per_step": step, "model_alone_windows_per_s": args.batch / step}


def fit_modes(dataset: Any, args: argparse.Namespace, filters: tuple[int, ...]) -> dict[str, Any]:
    """``model.fit`` seconds per step, streamed from Zarr vs in memory, the modes alternating ``repeats`` times
    (so that a change in machine load hits both alike)."""
    res: dict[str, Any] = {}
    steady: dict[str, list[float]] = {"zarr": [], "memory": []}
    for _ in range(args.repeats):
        for mode, mem in (("zarr", False), ("memory", True)):
            per_epoch = fit_step_seconds(dataset(mem), filters=filters, epochs=args.epochs)
            res.setdefault(f"fit_{mode}_s_per_step_epochs", []).append(per_epoch)
            steady[mode] += per_epoch[1:] if len(per_epoch) > 1 else per_epoch
    for mode in steady:
        res[f"fit_{mode}_s_per_step"] = statistics.median(steady[mode])
    res["fit_zarr_over_memory"] = res["fit_zarr_s_per_step"] / res["fit_memory_s_per_step"]
    return res


def print_table(res: dict[str, Any], args: argparse.Namespace, filters: tuple[int, ...]) -> None:
    print(f"device: {res['device']}")
    print(f"U-Net filters {list(filters)}, {args.patch}² px windows, batch {args.batch}, {args.workers} workers")
    print(f"{'sampler, 1 thread, Zarr':<34} {res['sampler_1thread_zarr_windows_per_s']:9.1f} windows/s")
    print(f"{'sampler, 1 thread, in memory':<34} {res['sampler_1thread_memory_windows_per_s']:9.1f} windows/s")
    print(f"{'sampler, prefetch threads, Zarr':<34} {res['sampler_prefetch_zarr_windows_per_s']:9.1f} windows/s")
    print(f"{'sampler, prefetch threads, memory':<34} {res['sampler_prefetch_memory_windows_per_s']:9.1f} windows/s")
    print(f"{'model alone (train_on_batch)':<34} {res['model_alone_windows_per_s']:9.1f} windows/s "
          f"({res['model_alone_s_per_step']:.3f} s/step)")
    print(f"{'fit, streamed from Zarr':<34} {res['fit_zarr_s_per_step']:9.3f} s/step")
    print(f"{'fit, in-memory NumPy':<34} {res['fit_memory_s_per_step']:9.3f} s/step")
    print(f"{'Zarr / memory':<34} {res['fit_zarr_over_memory']:9.3f}")


def main() -> None:
    args = parse_args()
    filters = tuple(args.filters)
    tmp = tempfile.TemporaryDirectory() if args.store is None else None
    root = Path(tmp.name) if tmp else args.store
    t0 = time.perf_counter()
    store = build_store(root / "bench.zarr", size=args.size, n_images=args.images)
    print(f"store: {args.images} simulated images of {args.size}² px, chunks 1024 ({time.perf_counter() - t0:.1f} s)")

    from semscale.config import TrainingConfig
    from semscale.training.dataset import PatchDataset
    from semscale.training.splits import make_split

    cfg = TrainingConfig(patch_size=args.patch, batch_size=args.batch, steps_per_epoch=args.steps, seed=0,
                         workers=args.workers, filters=filters, dropout=(0.1,) * len(filters))
    split = make_split(store, cfg)

    def dataset(in_memory: bool) -> Any:
        # member 1: window seed 1, split seed 0
        return PatchDataset(store, split, dataclasses.replace(cfg, in_memory=in_memory), member=1)

    res: dict[str, Any] = {
        "device": device_name(), "filters": list(filters), "patch": args.patch, "batch": args.batch,
        "steps": args.steps, "epochs": args.epochs, "workers": args.workers, "image_size": args.size,
    }
    for mode, mem in (("zarr", False), ("memory", True)):
        ds = dataset(mem)
        ds.batch(0, 0)  # warm up (in-memory: loads the images)
        res[f"sampler_1thread_{mode}_windows_per_s"] = sampler_rate(ds, max(4, args.steps // 2))
        res[f"sampler_prefetch_{mode}_windows_per_s"] = prefetch_rate(dataset(mem))
    res.update(model_alone(dataset, args, filters))
    res.update(fit_modes(dataset, args, filters))
    print_table(res, args, filters)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=float))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
