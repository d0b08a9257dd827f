"""Cold vs warm `predict`: what a fresh process (every CLI run) pays over a warm one.

    python benchmarks/bench_cold.py --out bench-cold [--size 2856 4096] [--block 1024] [--cli]

The paper U-Net (filters 16…256, untrained: only time counts) predicts a simulated 2856×4096 store image in
``tile`` mode with 1024² blocks, twice in one fresh process: the first run is cold (the network's graph is
traced for every new input shape it meets), the second warm. A Markdown row to stdout.

``--cli`` adds whole `semscale predict` processes, timed from start to exit: one on its own local cluster
(one worker), then two in a row on a running ``dask scheduler`` with one ``dask worker`` on 127.0.0.1 (the
first meets a fresh worker, the second a worker that has the model loaded; 2 threads, so that two blocks
are in flight as in the in-process run), and the same predict called twice through the Python API from one
client on that worker (the second call is the warm reference for a CLI process on running workers), each against the warm
in-process run.
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


def make_cli_campaign(out: Path, block: int) -> Path:
    """The benchmark image as a campaign a user would write (TIFF + YAML), ingested, with the model stored."""
    import tifffile
    import yaml

    from semscale.store import open_store
    from semscale.training.unet import build_unet, save_model

    folder = out / "cli"
    path = folder / "campaign.yaml"
    if (folder / "done").exists():
        return path
    (folder / "data").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "data" / "a_sem.tif", open_store(out / "bench.zarr").sem_array("a")[:])
    path.write_text(yaml.safe_dump({
        "name": "bench-cold", "store": "cli.zarr", "pixel_size_um": 0.05,
        "images": [{"id": "a", "sem": "data/a_sem.tif", "role": "predict"}],
        "ingest": {"chunk_size": block}, "training": {"name": "paper"}, "inference": {"mode": "tile"},
    }, sort_keys=False))
    subprocess.run([sys.executable, "-m", "semscale.cli", "ingest", str(path)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = open_store(folder / "cli.zarr")
    save_model(build_unet(seed=0), store.member_file("paper", 0, "model"), sidecar={"patch_size": 256})
    (folder / "done").write_text("ok")
    return path


def _cli_predict(config: Path, *extra: str) -> float:
    """Wall time (s) of one `semscale predict CONFIG --overwrite` process."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "semscale.cli", "predict", str(config), "--overwrite", "--json", *extra],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def cli_runs(out: Path, block: int) -> dict[str, float]:
    """`semscale predict` processes: on a local cluster, then twice on a running scheduler and worker."""
    import shutil

    config = make_cli_campaign(out, block)
    runs = {"local cluster (1 worker)": _cli_predict(config, "--workers", "1", "--gpu", "off", "--dashboard",
                                                     "127.0.0.1:0")}
    dask = shutil.which("dask")
    if dask is None:
        raise SystemExit("the `dask` command (dask[distributed]) is needed for --cli")
    sched_file = out / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        while not (sched_file.exists() and sched_file.stat().st_size):
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(subprocess.Popen([dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "2",
                                       "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout=60) as c:
            c.wait_for_workers(1, timeout=120)
        runs["running worker, first client"] = _cli_predict(config, "--scheduler", address)
        runs["running worker, next client"] = _cli_predict(config, "--scheduler", address)
        import semscale

        cfg = semscale.load_config(config)
        with Client(address, timeout=60) as c:
            for _ in range(2):  # the second: a client process that has run this predict before (warm)
                t = time.perf_counter()
                semscale.run_campaign(cfg, stages=("predict",), client=c, overwrite=True)
                warm = time.perf_counter() - t
        runs["running worker, warm client (Python API, second call)"] = warm
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, nargs=2, default=[2856, 4096])
    p.add_argument("--block", type=int, default=1024)
    p.add_argument("--child", action="store_true")
    p.add_argument("--cli", action="store_true", help="also time whole `semscale predict` processes")
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
    if args.cli:
        print("\n| `semscale predict` process | wall (s) | ÷ warm in-process predict |\n|---|---|---|")
        for what, wall in cli_runs(args.out, args.block).items():
            print(f"| {what} | {wall:.1f} | {wall / r['warm']:.2f} |")


if __name__ == "__main__":
    main()
