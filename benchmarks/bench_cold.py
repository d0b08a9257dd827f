"""Cold vs warm `predict`: what a fresh process (every CLI run) pays over a warm one.

    python benchmarks/bench_cold.py --out bench-cold [--size 2856 4096] [--block 1024]

The paper U-Net (filters 16…256, untrained: only time counts) predicts a simulated 2856×4096 store image in
``tile`` mode with 1024² blocks, twice in one fresh process: the first run is cold (the network's graph is
traced for every new input shape it meets), the second warm. A Markdown row to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_inputs(out: Path, shape: tuple[int, int], block: int) -> None:
    if (out / "done").exists():
        return
    from semscale.store import create_store
    from semscale.synth import simulate
    from semscale.training.unet import build_unet, save_model

    out.mkdir(parents=True, exist_ok=True)
    store = create_store(out / "bench.zarr", name="bench", pixel_size_um=0.05)
    sem = np.asarray(simulate(shape, oxidation_min=10.0, seed=0, with_eds=False).sem, np.uint8)
    store.create_image("a", shape=shape, dtype=np.uint8, chunks=block, attrs={"role": "predict"})[:] = sem
    store.finish_image("a", norm={"lo": 0.0, "hi": 255.0})
    save_model(build_unet(seed=0), store.member_file("paper", 0, "model"), sidecar={"patch_size": 256})
    store.model_dir("paper", create=True)
    (out / "done").write_text("ok")


def child(out: Path) -> None:
    t0 = time.perf_counter()
    from semscale.config import InferenceConfig
    from semscale.inference import predict_to_store
    from semscale.store import open_store

    store = open_store(out / "bench.zarr")
    cfg = InferenceConfig(mode="tile", tile_size=1024)
    runs = []
    for _ in range(2):
        t = time.perf_counter()
        predict_to_store(store, "a", models="paper", cfg=cfg, overwrite=True)
        runs.append(time.perf_counter() - t)
    px = float(np.prod(store.sem_array("a").shape))
    print(json.dumps({"cold": runs[0], "warm": runs[1], "process": time.perf_counter() - t0, "pixels": px}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, nargs=2, default=[2856, 4096])
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--child", action="store_true")
    args = p.parse_args()
    if args.child:
        child(args.out)
        return
    make_inputs(args.out, tuple(args.size), args.block)
    proc = subprocess.run([sys.executable, __file__, "--child", "--out", str(args.out)],
                          capture_output=True, text=True, check=True)
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print("| cold predict (s) | warm predict (s) | cold / warm | warm Mpx/s |\n|---|---|---|---|")
    print(f"| {r['cold']:.1f} | {r['warm']:.1f} | {r['cold'] / r['warm']:.2f} | {r['pixels'] / 1e6 / r['warm']:.2f} |")


if __name__ == "__main__":
    main()
