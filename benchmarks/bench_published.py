"""The published procedure as its authors run it vs semscale, on the same model and a 2856×4096 image.

    python benchmarks/bench_published.py --out bench-pub [--strides 256 128] [--size 2856 4096]

The model is the published architecture (filters 16…256, dropout called with ``training=True``; random
weights: only time, memory and agreement are measured) saved as legacy HDF5 and imported with
``semscale models import … --normalisation patch-l2`` (dropout off). Each method runs in a fresh process,
so its peak RSS (``ru_maxrss``) is its own:

* ``authors``: the image cropped to a multiple of 256; per window offset ``(dy, dx)`` on the stride grid one
  H×W probability canvas (patches cut at that offset, each normalised with ``keras.utils.normalize(x,
  axis=1)``, predicted in batches of 32, stitched); the canvases averaged where they cover a pixel;
* ``semscale``: ``predict_to_store`` in ``average`` mode at the same stride on the whole (uncropped) image,
  reflect borders, 1024² blocks, local threads.

Agreement is the share of equal labels on the pixels where both use the same windows. JSON to ``OUT``,
a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

P = 256


def make_inputs(out: Path, shape: tuple[int, int]) -> None:
    """The HDF5 model, the SEM image (.npy, simulated) and a store with the model imported."""
    out.mkdir(parents=True, exist_ok=True)
    if (out / "done").exists():
        return
    from semscale.inference.published import build_published_unet, import_models
    from semscale.store import create_store
    from semscale.synth import simulate

    build_published_unet().save(out / "unet_1.h5")
    sem = np.asarray(simulate(shape, oxidation_min=10.0, seed=0, with_eds=False).sem, np.uint8)
    np.save(out / "sem.npy", sem)
    store = create_store(out / "bench.zarr", name="bench", pixel_size_um=0.05)
    store.create_image("a", shape=shape, dtype=np.uint8, chunks=1024, attrs={"role": "predict"})[:] = sem
    store.finish_image("a", norm={"lo": 0.0, "hi": 255.0})
    import_models(store, [out / "unet_1.h5"], name="published", normalisation="patch-l2")
    (out / "done").write_text("ok")


def authors(out: Path, stride: int) -> dict[str, float]:
    """The published procedure (one canvas per window offset); labels to ``OUT/authors_<s>.npy``."""
    t0 = time.perf_counter()  # both methods are timed from loading the model on
    import keras

    model = keras.models.load_model(out / "unet_1.h5", compile=False)
    sem = np.load(out / "sem.npy")
    h, w = (n // P * P for n in sem.shape)
    image = sem[:h, :w].astype(np.float32)
    canvases = []
    for dy in range(0, P, stride):
        for dx in range(0, P, stride):
            ny, nx = (h - dy) // P, (w - dx) // P
            patches = image[dy : dy + ny * P, dx : dx + nx * P].reshape(ny, P, nx, P).swapaxes(1, 2)
            patches = keras.utils.normalize(patches.reshape(-1, P, P, 1), axis=1)
            probs = model.predict(patches, batch_size=32, verbose=0)  # Keras 3: dropout off in predict
            canvas = np.full((h, w, 4), np.nan, np.float32)
            canvas[dy : dy + ny * P, dx : dx + nx * P] = (
                probs.reshape(ny, nx, P, P, 4).swapaxes(1, 2).reshape(ny * P, nx * P, 4))
            canvases.append(canvas)
    labels = np.nanmean(np.stack(canvases), axis=0).argmax(-1).astype(np.uint8)
    seconds = time.perf_counter() - t0
    np.save(out / f"authors_{stride}.npy", labels)
    return {"seconds": seconds, "pixels": h * w}


def semscale_run(out: Path, stride: int) -> dict[str, float]:
    from semscale.config import InferenceConfig
    from semscale.inference import predict_to_store
    from semscale.store import open_store

    t0 = time.perf_counter()
    store = open_store(out / "bench.zarr")
    cfg = InferenceConfig(mode="average", stride=stride, batch_size=32)
    predict_to_store(store, "a", models="published", cfg=cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    np.save(out / f"semscale_{stride}.npy", np.asarray(store.prediction_arrays("published", "a")["labels"][...]))
    return {"seconds": seconds, "pixels": float(np.prod(store.sem_array("a").shape))}


def child(method: str, out: Path, stride: int) -> None:
    result = (authors if method == "authors" else semscale_run)(out, stride)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run(method: str, out: Path, stride: int) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--out", str(out), "--strides",
                           str(stride)], capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--strides", type=int, nargs="+", default=[256, 128])
    p.add_argument("--size", type=int, nargs=2, default=[2856, 4096])
    p.add_argument("--child", choices=["authors", "semscale"])
    args = p.parse_args()
    if args.child:
        child(args.child, args.out, args.strides[0])
        return
    make_inputs(args.out, tuple(args.size))
    rows = []
    for s in args.strides:
        a, b = run("authors", args.out, s), run("semscale", args.out, s)
        la, lb = np.load(args.out / f"authors_{s}.npy"), np.load(args.out / f"semscale_{s}.npy")
        h, w = la.shape
        inner = tuple(slice(P - s, (n - P) // s * s + s) for n in (h, w))
        agree = float((la[inner] == lb[: h, : w][inner]).mean())
        rows.append({"stride": s, "authors": a, "semscale": b, "agreement": agree})
        print(f"stride {s}: authors {a['seconds']:.1f} s, {a['peak_rss_mib']:.0f} MiB; semscale "
              f"{b['seconds']:.1f} s, {b['peak_rss_mib']:.0f} MiB; agreement {100 * agree:.3f} %", file=sys.stderr)
    (args.out / "published.json").write_text(json.dumps(rows, indent=2))
    print("| stride | method | pixels segmented | time (s) | Mpx/s | peak RSS (MiB) |\n|---|---|---|---|---|---|")
    for r in rows:
        for m in ("authors", "semscale"):
            v = r[m]
            print(f"| {r['stride']} | {m} | {v['pixels'] / 1e6:.2f} M | {v['seconds']:.1f} | "
                  f"{v['pixels'] / 1e6 / v['seconds']:.2f} | {v['peak_rss_mib']:.0f} |")
        print(f"| {r['stride']} | labels equal where both use the same windows | {100 * r['agreement']:.3f} % | | | |")


if __name__ == "__main__":
    main()
