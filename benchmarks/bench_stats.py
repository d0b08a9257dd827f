"""Statistics throughput and peak memory on large label mosaics: memory flat in image size.

    python benchmarks/bench_stats.py [--sizes 4096 16384] [--chunk 1024] [--threads 2]

For each size N an N×N four-phase label mosaic (grains of about 40 px that cross every chunk edge, 1 %
unlabelled) is written to a Zarr array in ``--chunk`` chunks, block by block. A fresh process then computes
every measure of it (:func:`semscale.analysis.microstructure.measure`: counts, TPB, Crofton interfaces,
components joined across chunks, 1000 bootstrap draws) on the threaded scheduler with ``--threads``
threads, and reports its wall time, throughput (Mpx/s) and peak resident memory (ru_maxrss) above the
imported-libraries baseline. Results go to stdout as a markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import resource, sys, time
import dask, zarr, dask.array as da
from semscale.analysis.microstructure import measure
from semscale.config import StatsConfig
dask.config.set(scheduler="threads", num_workers=int(sys.argv[2]))
arr = da.from_zarr(zarr.open_array(sys.argv[1], mode="r"))
t0 = time.perf_counter()
m = measure(arr, cfg=StatsConfig(), classes=("pore", "NiO", "Ni", "YSZ"), pixel_size_um=0.04458)
dt = time.perf_counter() - t0
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, int(m["component_count"].sum()))
"""

BASELINE = r"""
import resource
import dask, zarr, dask.array, semscale.analysis.microstructure, semscale.config, scipy.ndimage, scipy.sparse
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def mosaic_block(y0: int, x0: int, shape: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """Labels of the image region at (y0, x0): the phase whose smooth random field is largest, so grains
    continue across block edges; the fields are sums of sinusoids of the global pixel coordinates."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[y0:y0 + shape[0], x0:x0 + shape[1]].astype(np.float32)
    fields = []
    for _ in range(4):
        f = np.zeros(shape, np.float32)
        for _ in range(6):
            k = rng.uniform(0.05, 0.2, 2) * rng.choice([-1, 1], 2)
            f += np.sin(k[0] * yy + k[1] * xx + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        fields.append(f)
    lab = np.argmax(np.stack(fields), axis=0).astype(np.uint8)
    speck = (np.sin(yy * 12.9898 + xx * 78.233) * 43758.5453) % 1.0 < 0.01
    lab[speck] = 255
    return lab


def write_mosaic(path: Path, n: int, chunk: int) -> None:
    import zarr

    arr = zarr.create_array(str(path), shape=(n, n), chunks=(chunk, chunk), dtype="uint8", fill_value=255,
                            dimension_names=("y", "x"))
    for y in range(0, n, chunk):
        for x in range(0, n, chunk):
            arr[y:y + chunk, x:x + chunk] = mosaic_block(y, x, (min(chunk, n - y), min(chunk, n - x)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    base = float(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True,
                                check=True).stdout.split()[-1])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"labels_{n}.zarr"
            write_mosaic(path, n, args.chunk)
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.threads)], capture_output=True,
                                 text=True, check=True).stdout.split()
            dt, rss, comps = float(out[0]), float(out[1]), int(out[2])
            rows.append((n, dt, n * n / dt / 1e6, rss - base, n * n / 2**20, comps))
    print(f"baseline after imports: {base:.0f} MB; chunk {args.chunk}², {args.threads} threads\n")
    print("| image | time (s) | throughput (Mpx/s) | peak RSS above baseline (MB) | labels (MB) | components |")
    print("|---|---|---|---|---|---|")
    for n, dt, mpx, rss, size_mb, comps in rows:
        print(f"| {n}² | {dt:.1f} | {mpx:.1f} | {rss:.0f} | {size_mb:.0f} | {comps} |")


if __name__ == "__main__":
    main()
