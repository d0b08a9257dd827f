"""Load: a campaign of many full-size SEM images predicted on a 2-worker cluster, without memory growth.

Usage::

    python benchmarks/bench_load.py [--images 16] [--shape 2856 4096] [--workers 2] [--out bench-load]

Writes ``--images`` SEM images of ``--shape`` px (smoothed noise, uint8, 1024² chunks) into a store, then
runs ``semscale.pipeline.predict`` (tile mode, a 3-level U-Net of filters 4…16: the cost per block is the
network's, the point is memory) on a ``LocalCluster`` of ``--workers`` processes × 1 thread. A thread samples
each worker's RSS every 0.1 s; per image it records the peak of each worker, so growth shows up as a trend
over the images. Prints a markdown table on stderr and JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


class WorkerRSS:
    """Samples the RSS (MiB) of every worker process of ``client`` in a thread; ``take()`` returns the peak
    per worker since the last call."""

    def __init__(self, client: Any, interval: float = 0.1) -> None:
        import os

        import psutil

        self.procs = {addr: psutil.Process(pid) for addr, pid in client.run(os.getpid).items()}
        self.interval = interval
        self.peaks = dict.fromkeys(self.procs, 0.0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for addr, proc in self.procs.items():
                    try:
                        self.peaks[addr] = max(self.peaks[addr], proc.memory_info().rss / 2**20)
                    except Exception:  # a restarted worker: keep the peak seen so far
                        pass
            time.sleep(self.interval)

    def take(self) -> list[float]:
        with self._lock:
            out = [self.peaks[a] for a in sorted(self.peaks)]
            self.peaks = dict.fromkeys(self.procs, 0.0)
        return out

    def __enter__(self) -> WorkerRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def make_store(out: Path, *, n_images: int, shape: tuple[int, int]) -> Any:
    from scipy.ndimage import gaussian_filter

    from semscale.kernels.norm import histogram, norm_from_histogram
    from semscale.store import create_store

    store = create_store(out / "load.zarr", name="load", pixel_size_um=0.04458)
    rng = np.random.default_rng(0)
    for k in range(n_images):
        image_id = f"im{k:02d}"
        if store.has_image(image_id):
            continue
        arr = store.create_image(image_id, shape=shape, dtype=np.uint8, chunks=1024,
                                 attrs={"oxidation_min": float(k), "role": "predict"})
        hist = np.zeros(256, np.int64)
        for y in range(0, shape[0], 1024):
            band = gaussian_filter(rng.normal(120, 40, (min(1024, shape[0] - y), shape[1])), 1.5)
            band = np.clip(band, 0, 255).astype(np.uint8)
            arr[y : y + band.shape[0]] = band
            hist += histogram(band, nbins=256)
        store.finish_image(image_id, norm=norm_from_histogram(hist))
    return store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--shape", type=int, nargs=2, default=(2856, 4096))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench-load"))
    args = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    from semscale.config import InferenceConfig
    from semscale.inference import predict_to_store
    from semscale.training.unet import build_unet, save_model

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = make_store(args.out, n_images=args.images, shape=tuple(args.shape))
    model = args.out / "tiny" / "tiny.keras"
    if not model.exists():
        save_model(build_unet(filters=(4, 8, 16), seed=0), model, sidecar={"patch_size": 256})
    sys.stderr.write(f"store ready in {time.perf_counter() - t0:.0f} s\n")
    rows = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client, \
            WorkerRSS(client) as rss:
        start = rss.take()
        for image_id in store.image_ids():
            t = time.perf_counter()
            r = predict_to_store(store, image_id, InferenceConfig(mode="tile"), models=[model], model_name="tiny",
                                 overwrite=True, client=client)
            rows.append({"image": image_id, "seconds": time.perf_counter() - t, "blocks": r["blocks"],
                         "peak_rss_mib": rss.take()})
            sys.stderr.write(f"{image_id}: {rows[-1]['seconds']:.1f} s, peak RSS per worker "
                             f"{', '.join(f'{v:.0f}' for v in rows[-1]['peak_rss_mib'])} MiB\n")
    peaks = np.array([r["peak_rss_mib"] for r in rows])
    half = len(rows) // 2
    result = {"images": args.images, "shape": list(args.shape), "workers": args.workers,
              "rss_at_start_mib": start, "rows": rows,
              "peak_rss_mib_per_worker": peaks.max(0).tolist(),
              "first_half_mean_peak_mib": float(peaks[:half].max(1).mean()),
              "second_half_mean_peak_mib": float(peaks[half:].max(1).mean()),
              "mpx_per_s": args.images * args.shape[0] * args.shape[1] / 1e6 / sum(r["seconds"] for r in rows)}
    sys.stderr.write(
        f"\n{args.images} images of {args.shape[0]}×{args.shape[1]} px on {args.workers} workers: "
        f"{result['mpx_per_s']:.2f} Mpx/s; peak RSS per worker {', '.join(f'{v:.0f}' for v in result['peak_rss_mib_per_worker'])} MiB; "
        f"mean per-image peak, first half {result['first_half_mean_peak_mib']:.0f} MiB, second half "
        f"{result['second_half_mean_peak_mib']:.0f} MiB\n")
    sys.stdout.write(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
