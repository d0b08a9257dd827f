"""Peak memory while ingesting large tiled BigTIFFs: flat in image size, far below the image.

    python benchmarks/bench_ingest.py [--sizes 4096 8192 16384] [--chunk 1024]

For each size N a N×N 8-bit tiled (512², zlib) BigTIFF is written, then ingested in a fresh process whose
peak resident memory (ru_maxrss) is reported next to the image size. Results go to stdout as a markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import resource, sys, time, yaml
from semscale.config import load_config
from semscale.io.ingest import ingest_campaign
cfg = load_config(sys.argv[1])
t0 = time.perf_counter()
ingest_campaign(cfg)
dt = time.perf_counter() - t0
print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

BASELINE = r"""
import resource
import semscale.config, semscale.io.ingest, semscale.store, dask.array, zarr, tifffile
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_tiff(path: Path, n: int) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    row = rng.integers(0, 256, (512, n), dtype=np.uint8)

    def tiles():
        for _ in range(n // 512):
            for x in range(0, n, 512):
                yield row[:, x:x + 512]

    tifffile.imwrite(path, tiles(), shape=(n, n), dtype=np.uint8, tile=(512, 512), bigtiff=True,
                     compression="zlib")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--chunk", type=int, default=1024)
    args = p.parse_args()
    import yaml

    base = float(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True,
                                check=True).stdout)
    print(f"baseline RSS after imports: {base:.0f} MiB\n")
    print("| image | image size | ingest time | throughput | peak RSS | peak RSS − imports |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            d = Path(tmp) / f"n{n}"
            d.mkdir()
            write_tiff(d / "sem.tif", n)
            (d / "c.yaml").write_text(yaml.safe_dump({
                "name": "bench", "store": "c.zarr", "pixel_size_um": 0.04458,
                "images": [{"id": "big", "sem": "sem.tif"}], "ingest": {"chunk_size": args.chunk}}))
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, str(d / "c.yaml")], capture_output=True,
                                 text=True, check=True).stdout.split()
            dt, rss = float(out[0]), float(out[1])
            mib = n * n / 2**20
            print(f"| {n}×{n} uint8 | {mib:.0f} MiB | {dt:.1f} s | {n * n / 1e6 / dt:.1f} Mpx/s | "
                  f"{rss:.0f} MiB | {rss - base:.0f} MiB |", flush=True)
            _ = time.perf_counter() - t0


if __name__ == "__main__":
    main()
