"""The GPU figures of issue 13, in one prepared run of at most 8 minutes on one GPU.

    python benchmarks/gpu_check.py --out OUT [--backends jax torch]   # on the GPU machine
    python benchmarks/gpu_check.py --out OUT --dry-run                 # anywhere: tiny sizes, this backend

Per Keras backend (each in its own process, ``KERAS_BACKEND`` set before Keras is imported):

* ``raw``: the paper U-Net (filters 16…256) on one tile of 2048² and 4096² px, float32 and bfloat16
  (``mixed_bfloat16``), Mpx/s of network output after two warm-up calls;
* ``train``: the paper net's training step (batch 32 × 256², mixed precision, Adam), samples/s;
* ``e2e`` (first backend only): ``predict_to_store`` in ``tile`` mode with one Dask worker
  (``LocalCUDACluster`` where dask-cuda and a GPU are, else a CPU ``LocalCluster``; cupy blending where
  cupy is) on a 2856×4096 image and a 16384² mosaic: end-to-end Mpx/s and its share of the raw float32
  rate at the block's tile size.

``--dry-run`` shrinks every size (tiles 64/128 px, batch 4 × 64², images 300×400 and 512²) and uses the
backend Keras has here, so the script's every path runs on a CPU in a test. Writes ``OUT/gpu.json`` and
``OUT/gpu.md`` (a table with the device named).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL = {"tiles": [2048, 4096], "train_batch": 32, "train_patch": 256, "images": [[2856, 4096], [16384, 16384]],
        "reps": 5, "train_steps": 20, "block": 4096, "filters": [16, 32, 64, 128, 256]}
DRY = {"tiles": [64, 128], "train_batch": 4, "train_patch": 64, "images": [[300, 400], [512, 512]],
       "reps": 2, "train_steps": 3, "block": 256, "filters": [4, 8, 16]}


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return "GPU: " + out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (no GPU)"


def _time(fn: Any, reps: int) -> float:
    fn()
    fn()  # warm-up: traces and autotuning
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def raw_rates(sizes: dict[str, Any]) -> list[dict[str, Any]]:
    import keras

    from semscale.training.unet import build_unet

    rows = []
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        model = build_unet(filters=sizes["filters"], seed=0)
        for tile in sizes["tiles"]:
            x = np.random.default_rng(0).random((1, tile, tile, 1), dtype=np.float32)
            dt = _time(lambda x=x, m=model: keras.ops.convert_to_numpy(m.predict_on_batch(x)), sizes["reps"])
            rows.append({"policy": policy, "tile": tile, "seconds": dt, "mpx_per_s": tile * tile / 1e6 / dt})
    keras.mixed_precision.set_global_policy("float32")
    return rows


def train_rate(sizes: dict[str, Any]) -> dict[str, Any]:
    import keras

    from semscale.training.unet import build_unet

    policy = "mixed_float16" if device_name().startswith("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    model = build_unet(filters=sizes["filters"], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    b, p = sizes["train_batch"], sizes["train_patch"]
    rng = np.random.default_rng(0)
    x = rng.random((b, p, p, 1), dtype=np.float32)
    y = rng.integers(0, 4, (b, p, p)).astype(np.int32)
    dt = _time(lambda: model.train_on_batch(x, y), sizes["train_steps"])
    keras.mixed_precision.set_global_policy("float32")
    return {"policy": policy, "batch": b, "patch": p, "step_seconds": dt, "samples_per_s": b / dt}


def end_to_end(sizes: dict[str, Any], raw: list[dict[str, Any]], work: Path) -> list[dict[str, Any]]:
    from semscale.config import ClusterConfig, InferenceConfig
    from semscale.inference import predict_to_store
    from semscale.runtime.backend import cupy_available, dask_cuda_available, detect_gpus
    from semscale.runtime.cluster import get_client
    from semscale.store import create_store
    from semscale.synth import simulate
    from semscale.training.unet import build_unet, save_model

    store = create_store(work / "gpu.zarr", name="gpu", pixel_size_um=0.05)
    save_model(build_unet(filters=sizes["filters"], seed=0), store.member_file("paper", 0, "model"),
               sidecar={"patch_size": 256})
    store.model_dir("paper", create=True)
    base = np.asarray(simulate((1024, 1024), oxidation_min=10.0, seed=0, with_eds=False).sem, np.uint8)
    gpu = detect_gpus() > 0 and dask_cuda_available()
    cluster = ClusterConfig(n_workers=1, gpu="on" if gpu else "off", dashboard_address=None)
    tile = min(sizes["tiles"][-1], sizes["block"])
    raw32 = max((r["mpx_per_s"] for r in raw if r["policy"] == "float32" and r["tile"] <= tile), default=None)
    rows = []
    with get_client(cluster) as client:
        for k, (h, w) in enumerate(sizes["images"]):
            image_id = f"im{k}"
            arr = store.create_image(image_id, shape=(h, w), dtype=np.uint8, chunks=sizes["block"],
                                     attrs={"role": "predict"})
            for r0 in range(0, h, 1024):  # the simulated 1024² image tiled over the mosaic
                rows_ = min(1024, h - r0)
                arr[r0 : r0 + rows_] = np.tile(base, (1, -(-w // 1024)))[:rows_, :w]
            store.finish_image(image_id, norm={"lo": 0.0, "hi": 255.0})
            cfg = InferenceConfig(mode="tile", tile_size=tile)
            t0 = time.perf_counter()
            predict_to_store(store, image_id, models="paper", cfg=cfg, client=client)
            dt = time.perf_counter() - t0
            rate = h * w / 1e6 / dt
            rows.append({"image": [h, w], "seconds": dt, "mpx_per_s": rate, "cupy": cupy_available(),
                         "gpu_workers": gpu, "share_of_raw": rate / raw32 if raw32 else None})
    return rows


def child(backend: str, sizes: dict[str, Any], e2e: bool, work: Path) -> dict[str, Any]:
    raw = raw_rates(sizes)
    out: dict[str, Any] = {"backend": backend, "raw": raw, "train": train_rate(sizes)}
    if e2e:
        out["e2e"] = end_to_end(sizes, raw, work)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Device: {result['device']}; {'dry run (tiny sizes)' if result['dry_run'] else 'full sizes'}.", "",
             "| backend | what | size | policy | rate |", "|---|---|---|---|---|"]
    for b in result["backends"]:
        for r in b["raw"]:
            lines.append(f"| {b['backend']} | raw network | {r['tile']}² tile | {r['policy']} | "
                         f"{r['mpx_per_s']:.2f} Mpx/s |")
        t = b["train"]
        lines.append(f"| {b['backend']} | training step | batch {t['batch']} × {t['patch']}² | {t['policy']} | "
                     f"{t['samples_per_s']:.1f} samples/s |")
        for e in b.get("e2e", []):
            share = f" ({100 * e['share_of_raw']:.0f} % of raw)" if e["share_of_raw"] else ""
            lines.append(f"| {b['backend']} | predict_to_store, 1 {'GPU' if e['gpu_workers'] else 'CPU'} worker"
                         f"{', cupy' if e['cupy'] else ''} | {e['image'][0]}×{e['image'][1]} | float32 | "
                         f"{e['mpx_per_s']:.2f} Mpx/s{share} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--backends", nargs="+", help="Keras backends (default: jax torch; --dry-run: this one)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device is here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--e2e", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = DRY if args.dry_run else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(child(args.child, sizes, args.e2e, Path(tmp))))
        return 0
    if args.backends:
        backends = args.backends
    elif args.dry_run:
        backends = [os.environ.get("KERAS_BACKEND", "tensorflow")]
    else:
        backends = ["jax", "torch"]
    results = []
    for k, backend in enumerate(backends):
        cmd = [sys.executable, __file__, "--child", backend, "--out", str(args.out)]
        cmd += ["--dry-run"] * args.dry_run + ["--e2e"] * (k == 0)
        env = {**os.environ, "KERAS_BACKEND": backend}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            results.append({"backend": backend, "error": proc.stderr.strip().splitlines()[-1:], "raw": [],
                            "train": None})
            continue
        results.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - t0})
    ok = [r for r in results if "error" not in r]
    result = {"device": device_name(), "dry_run": args.dry_run, "backends": ok,
              "failed": [r for r in results if "error" in r]}
    (args.out / "gpu.json").write_text(json.dumps(result, indent=2))
    (args.out / "gpu.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0 if ok and not result["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
