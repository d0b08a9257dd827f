"""Inference benchmark: modes × cost × accuracy on a 2856×4096 simulator image, raw network ceiling,
1 vs 2 workers, and peak memory on mosaics of growing size.

    python benchmarks/bench_infer.py all --out bench-out            # everything (reuses cached data/model)
    python benchmarks/bench_infer.py mosaic --out bench-out --size 16384   # one mosaic run (fresh process)
    python benchmarks/bench_infer.py halo --out bench-out                  # halo reads vs map_overlap
    python benchmarks/bench_infer.py halosweep --out bench-out             # tile halo 16…112 px × blocks
    python benchmarks/bench_infer.py share --out bench-out [--halo 16] [--reps 5]  # share of the raw rate

The paper U-Net is trained briefly (``--train-seconds``) on simulated 256² patches with ground truth and
cached in ``OUT/unet/member_0.keras``; the benchmark image is simulated once into ``OUT/bench.zarr``.
``average`` at stride 32 costs ~70 network evaluations per pixel, so it runs on a central crop only (full
image context) and its full-image time is extrapolated from its evaluation count. Results go to
``OUT/results.json`` and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (2856, 4096)
CHUNK = 1024
CROP = (slice(1152, 1664), slice(1024, 2048))  # 512 × 1024 px, aligned to 32


class PeakRSS:
    """Samples the resident memory of this process and its children (MiB) in a thread."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    def _rss(self) -> float:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except Exception:
                pass
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- data and model ----------------------------------------------------------------------------------
def bench_store(out: Path) -> Any:
    from semscale.store import create_store, open_store
    from semscale.synth import add_to_store, simulate

    path = out / "bench.zarr"
    if path.exists():
        s = open_store(path)
        if s.has_image("bench") and s.has_labels("bench", "truth"):
            return s
    log("simulating the 2856×4096 benchmark image")
    sim = simulate(SHAPE, oxidation_min=60, seed=123, with_eds=False)
    s = create_store(path, name="bench", pixel_size_um=0.04458)
    add_to_store(s, "bench", sim, chunks=CHUNK)
    return s


def train_model(out: Path, *, seconds: float, batch: int = 8, seed: int = 0) -> Path:
    """Brief fit of the paper U-Net on random 256² patches of simulated images (flips/rotations)."""
    path = out / "unet" / "member_0.keras"
    if path.exists():
        return path
    import keras

    from semscale.inference import norm_for_array
    from semscale.kernels.norm import apply_norm
    from semscale.synth import simulate
    from semscale.training.unet import build_unet, save_model

    log("simulating training images")
    images, truths = [], []
    for k, t in enumerate((0, 30, 60, 120)):
        sim = simulate((1024, 1024), oxidation_min=t, seed=1000 + k, with_eds=False)
        images.append(apply_norm(sim.sem, norm_for_array(sim.sem)))
        truths.append(sim.truth)
    rng = np.random.default_rng(seed)

    def sample() -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(batch):
            i = rng.integers(len(images))
            y0, x0 = rng.integers(0, 1024 - 256, 2)
            x = images[i][y0 : y0 + 256, x0 : x0 + 256]
            y = truths[i][y0 : y0 + 256, x0 : x0 + 256]
            k = int(rng.integers(4))
            x, y = np.rot90(x, k), np.rot90(y, k)
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(x)
            ys.append(y)
        return np.stack(xs)[..., None].astype(np.float32), np.stack(ys).astype(np.int32)

    keras.utils.set_random_seed(seed)
    model = build_unet(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    log(f"training the paper U-Net for {seconds:.0f} s (batch {batch} × 256²)")
    t0, step, hist = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < seconds:
        x, y = sample()
        loss, acc = model.train_on_batch(x, y)[:2]
        hist.append((float(loss), float(acc)))
        step += 1
        if step % 10 == 0:
            recent = np.mean(hist[-10:], axis=0)
            log(f"  step {step}: loss {recent[0]:.3f} acc {recent[1]:.3f}")
    recent = np.mean(hist[-20:], axis=0)
    save_model(model, path, sidecar={
        "patch_size": 256, "seed": seed,
        "training": {"steps": step, "batch": batch, "seconds": round(time.perf_counter() - t0, 1),
                     "final_loss": float(recent[0]), "final_accuracy": float(recent[1]),
                     "data": "4 simulated 1024² images (oxidation 0/30/60/120 min), random 256² patches"},
    })
    return path


# --- runs ------------------------------------------------------------------------------------------
def run_mode(store: Any, model: Path, name: str, *, warm: bool = False, client: Any = None,
             **settings: Any) -> dict[str, Any]:
    """Time one Zarr→Zarr prediction with ``InferenceConfig(**settings)``. ``warm``: run it once untimed
    first, so that one-off costs (graph tracing for each new tile shape, about 1 s per shape on CPU) are not
    counted: the steady state of a campaign that segments many images."""
    from semscale.config import InferenceConfig
    from semscale.inference import predict_to_store

    cfg = InferenceConfig(**settings)
    first = None
    if warm:
        t0 = time.perf_counter()
        predict_to_store(store, "bench", cfg, models=[model], model_name=name, overwrite=True, client=client)
        first = time.perf_counter() - t0
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        summ = predict_to_store(store, "bench", cfg, models=[model], model_name=name, overwrite=True,
                                client=client)
        dt = time.perf_counter() - t0
    px = SHAPE[0] * SHAPE[1]
    res = {"name": name, **settings, "warm": warm, "seconds": dt,
           "mpx_per_s": px / 1e6 / dt, "evals_per_px": summ["evaluations_per_pixel"], "peak_rss_mib": rss.peak,
           "first_run_seconds": first}
    log(f"{name}: {dt:.1f} s, {res['mpx_per_s']:.3f} Mpx/s, {res['evals_per_px']:.2f} evals/px, "
        f"peak RSS {rss.peak:.0f} MiB")
    return res


def s32_crop(store: Any, model: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from semscale.config import InferenceConfig
    from semscale.inference import (
        input_extent,
        make_geometry,
        predict_region,
        read_symmetric,
        resolve_members,
    )
    from semscale.inference.members import member_fns
    from semscale.kernels.norm import apply_norm

    members, facts = resolve_members([model])
    geom = make_geometry(InferenceConfig(mode="average", patch_size=256, stride=32, batch_size=8), facts)
    core = ((CROP[0].start, CROP[0].stop), (CROP[1].start, CROP[1].stop))
    (lo0, hi0), (lo1, hi1) = input_extent(*core[0], geom), input_extent(*core[1], geom)
    raw = read_symmetric(store.sem_array("bench"), (lo0, hi0), (lo1, hi1))
    x = apply_norm(raw, store.norm("bench"))
    log("average s=32 on the crop")
    t0 = time.perf_counter()
    out = predict_region(x, origin=(lo0, lo1), core=core, predict_fns=member_fns(members)[0], geom=geom)
    dt = time.perf_counter() - t0
    from semscale.inference import count_evaluations, window_starts

    n_win = len(window_starts(*core[0], patch_size=256, stride=32)) * len(window_starts(*core[1], patch_size=256, stride=32))
    evals_crop = n_win * 256 * 256
    full = count_evaluations(SHAPE, tuple(tuple(min(CHUNK, s - a) for a in range(0, s, CHUNK)) for s in SHAPE), geom)
    eval_rate = evals_crop / dt
    res = {"name": "average_s32 (crop; full image extrapolated)", "mode": "average", "stride": 32,
           "crop_seconds": dt, "evals_per_px": full / (SHAPE[0] * SHAPE[1]),
           "seconds": full / eval_rate, "mpx_per_s": SHAPE[0] * SHAPE[1] / 1e6 / (full / eval_rate),
           "extrapolated": True}
    log(f"s32 crop: {dt:.1f} s; extrapolated full image {res['seconds']:.0f} s ({res['evals_per_px']:.1f} evals/px)")
    return np.argmax(out[..., :4], -1).astype(np.uint8), res


def raw_throughput(store: Any, model: Path, shape: tuple[int, int]) -> dict[str, Any]:
    """The network alone on one in-memory tile of ``shape`` (image mirrored where it is smaller)."""
    from semscale.kernels.norm import apply_norm
    from semscale.training.unet import get_cached_model

    m, _ = get_cached_model(model)
    h, w = shape
    img = np.asarray(store.sem_array("bench")[: min(h, SHAPE[0]), : min(w, SHAPE[1])])
    img = np.pad(img, ((0, h - img.shape[0]), (0, w - img.shape[1])), mode="symmetric")
    x = apply_norm(img, store.norm("bench"))[None, ..., None]
    m.predict_on_batch(x)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        m.predict_on_batch(x)
        times.append(time.perf_counter() - t0)
    dt = min(times)
    log(f"raw network on one {h}×{w} tile: {h * w / 1e6 / dt:.3f} Mpx/s")
    return {"tile_px": [h, w], "seconds": dt, "mpx_per_s": h * w / 1e6 / dt}


def _warm(path: str) -> None:
    from semscale.training.unet import get_cached_model

    get_cached_model(path)


def run_workers(store: Any, model: Path, n_workers: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            Client(cl) as c:
        c.run(_warm, str(model.resolve()))  # import the backend and load the model before timing
        res = run_mode(store, model, f"tile_{n_workers}w", mode="tile", client=c, warm=True)
    res["workers"] = n_workers
    return res


def mosaic(out: Path, size: int, *, paper: bool = False, halo: int | None = None) -> dict[str, Any]:
    """Peak RSS of tile-mode Zarr→Zarr prediction on a size×size mosaic (fresh process) with a tiny model,
    or with ``paper`` the trained paper U-Net of ``OUT/unet`` (train it first with ``halosweep`` or ``all``)."""
    import resource

    from semscale.config import InferenceConfig
    from semscale.inference import predict_to_store, read_symmetric
    from semscale.store import create_store
    from semscale.training.unet import build_unet, save_model

    src = bench_store(out)
    model, name = (out / "unet" / "member_0.keras", "paper") if paper else (out / "tiny" / "tiny.keras", "tiny")
    if not model.exists():
        if paper:
            raise SystemExit(f"no trained paper U-Net at {model}: run `halosweep` or `all` with --out {out} first")
        save_model(build_unet(filters=(4, 8, 16), seed=0), model, sidecar={"patch_size": 256})
    path = out / f"mosaic_{size}.zarr"
    s = create_store(path, name="mosaic", pixel_size_um=0.04458)
    if not s.has_image("m"):
        a = s.create_image("m", shape=(size, size), dtype=np.uint8, chunks=CHUNK)
        sem = src.sem_array("bench")
        for y in range(0, size, CHUNK):
            for x in range(0, size, CHUNK):
                a[y : y + CHUNK, x : x + CHUNK] = read_symmetric(sem, (y, y + CHUNK), (x, x + CHUNK))
        s.finish_image("m", norm=src.norm("bench"))
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        predict_to_store(s, "m", InferenceConfig(mode="tile", halo=halo), models=[model], model_name=name,
                         overwrite=True)
        dt = time.perf_counter() - t0
    res = {"size": size, "model": name, "halo": halo, "mpx": size * size / 1e6, "seconds": dt, "mpx_per_s": size * size / 1e6 / dt,
           "peak_rss_mib_predict": rss.peak, "max_rss_mib_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print("RESULT " + json.dumps(res), flush=True)
    return res


def halo(out: Path, *, reps: int = 3) -> dict[str, Any]:
    """Block tasks reading their own halo from the SEM's Zarr array (the store path) vs the same tasks fed
    by dask ``map_overlap``: a 2048² image in 256² chunks (64 blocks), a tiny U-Net (where scheduling costs
    show most), tile mode, interleaved repeats in this process and on 2 worker processes; outputs compared."""
    import semscale.inference.to_store as to_store
    from semscale.config import InferenceConfig
    from semscale.inference import norm_for_array, predict_to_store
    from semscale.store import create_store
    from semscale.training.unet import build_unet, save_model

    tiny = out / "tiny" / "tiny.keras"
    if not tiny.exists():
        save_model(build_unet(filters=(4, 8, 16), seed=0), tiny, sidecar={"patch_size": 256})
    s = create_store(out / "halo.zarr", name="halo", pixel_size_um=0.04458)
    if not s.has_image("h"):
        a = s.create_image("h", shape=(2048, 2048), dtype=np.uint8, chunks=256)
        img = np.random.default_rng(0).integers(0, 256, (2048, 2048), dtype=np.uint8)
        a[:] = img
        s.finish_image("h", norm=norm_for_array(img))

    def run(client: Any) -> dict[str, Any]:
        times: dict[str, list[float]] = {"reads": [], "map_overlap": []}
        for _ in range(reps):
            for name, reads in (("reads", True), ("map_overlap", False)):
                to_store._HALO_READS = reads
                t0 = time.perf_counter()
                predict_to_store(s, "h", InferenceConfig(mode="tile"), models=[tiny], model_name=name,
                                 overwrite=True, client=client)
                times[name].append(time.perf_counter() - t0)
        to_store._HALO_READS = True
        same = all((s.predictions("reads", "h")[k].compute() == s.predictions("map_overlap", "h")[k].compute()).all()
                   for k in ("labels", "confidence"))
        best = {k: min(v) for k, v in times.items()}
        return {"seconds": times, "ratio_map_overlap_to_reads": best["map_overlap"] / best["reads"],
                "bit_identical": bool(same)}

    from distributed import Client, LocalCluster

    res = {"local": run(None)}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cl, \
            Client(cl) as c:
        run(c)  # warm the workers (backend import, model load)
        res["2 workers"] = run(c)
    for k, r in res.items():
        log(f"halo {k}: map_overlap / reads = {r['ratio_map_overlap_to_reads']:.2f} "
            f"(min of {reps}; bit-identical: {r['bit_identical']})")
    return res


def markdown(results: dict[str, Any]) -> str:
    """The README tables from ``results.json``."""
    lines = ["| mode | evals/px | time (s) | Mpx/s | peak RSS (MiB) | accuracy (image) | accuracy (crop) | "
             "agreement with avg s=32 (crop) |", "|---|---|---|---|---|---|---|---|"]
    for name, r in results.get("runs", {}).items():
        ext = " (extrap.)" if r.get("extrapolated") else ""
        pct = lambda v: f"{100 * v:.2f} %" if v is not None else "–"  # noqa: E731
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "–"
        lines.append(f"| {name} | {r['evals_per_px']:.2f} | {r['seconds']:.1f}{ext} | {r['mpx_per_s']:.3f}{ext} | "
                     f"{rss} | {pct(r.get('accuracy'))} | {pct(r.get('accuracy_crop'))} | "
                     f"{pct(r.get('agreement_s32_crop'))} |")
    raw = results.get("raw", [])
    if raw:
        lines += ["", "| raw network tile (px) | Mpx/s |", "|---|---|"]
        lines += [f"| {r['tile_px'][0]}×{r['tile_px'][1]} | {r['mpx_per_s']:.3f} |" for r in raw]
        best = {tuple(r["tile_px"]): r["mpx_per_s"] for r in raw}
        lines += ["", "| run | image Mpx/s | network-input Mpx/s | share of raw (input px) | share of raw (image px) |",
                  "|---|---|---|---|---|"]
        pairs = [("tile_b1024", (1248, 1248)), ("tile_b2048", (2272, 2272)), ("tile_b4096", (3088, 4320))]
        for name, tile in pairs:
            r = results.get("runs", {}).get(name)
            if r and tile in best:
                net = r["mpx_per_s"] * r["evals_per_px"]
                lines.append(f"| {name} | {r['mpx_per_s']:.3f} | {net:.3f} | {net / best[tile]:.0%} | "
                             f"{r['mpx_per_s'] / best[tile]:.0%} |")
    for r in results.get("workers", []):
        lines.append(f"- {r['workers']} worker(s): {r['seconds']:.1f} s, {r['mpx_per_s']:.3f} Mpx/s, "
                     f"peak RSS {r['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def _scores(lab: np.ndarray, truth: np.ndarray, lab32: np.ndarray | None) -> dict[str, float]:
    """Accuracy vs truth (image and crop) and, with the s=32 crop labels, agreement with them."""
    res = {"accuracy": float((lab == truth).mean()), "accuracy_crop": float((lab[CROP] == truth[CROP]).mean())}
    if lab32 is not None:
        res["agreement_s32_crop"] = float((lab[CROP] == lab32).mean())
    return res


def _accuracies(store: Any, results: dict[str, Any], out: Path) -> None:
    """Accuracy vs truth (image and crop) and agreement with average s=32 on the crop, per run."""
    truth = store.labels("bench", "truth").compute()
    lab32 = np.load(out / "s32_crop_labels.npy") if (out / "s32_crop_labels.npy").exists() else None
    for name, r in results["runs"].items():
        if name == "average_s32":
            r["accuracy_crop"] = float((lab32 == truth[CROP]).mean())
            r["agreement_s32_crop"] = 1.0
            continue
        r.update(_scores(store.predictions(name, "bench")["labels"].compute(), truth, lab32))


HALOS = (16, 32, 48, 64, 80, 96)
"""Tile halos (px) of the sweep, below the paper net's exact 112 px."""


def halo_sweep(out: Path, *, train_seconds: float, blocks: tuple[int, ...] = (1024, 2048)) -> dict[str, Any]:
    """Tile mode at each halo of :data:`HALOS` and the exact one, per block size (tile = block): time (warm),
    evaluations per pixel, agreement with the exact halo (whole image) and with average s=32 (crop),
    accuracy vs truth (whole image and crop). The chosen default is the smallest halo with >= 99.9 %
    agreement with the exact halo at every block size."""
    store = bench_store(out)
    model = train_model(out, seconds=train_seconds)
    truth = store.labels("bench", "truth").compute()
    if not (out / "s32_crop_labels.npy").exists():
        lab32, _ = s32_crop(store, model)
        np.save(out / "s32_crop_labels.npy", lab32)
    lab32 = np.load(out / "s32_crop_labels.npy")
    rows: list[dict[str, Any]] = []
    for block in blocks:
        exact = None
        for h in (None, *HALOS):
            name = f"tile_b{block}_h{h or 'exact'}"
            r = run_mode(store, model, name, warm=True, mode="tile", block_size=block, tile_size=block, halo=h)
            lab = store.predictions(name, "bench")["labels"].compute()
            if exact is None:
                exact = lab
            r.update(block=block, halo=h, agreement_exact=float((lab == exact).mean()), **_scores(lab, truth, lab32))
            log(f"  halo {h or 'exact'}: agreement with exact {r['agreement_exact']:.4%}, "
                f"with s=32 {r['agreement_s32_crop']:.4%}, accuracy {r['accuracy']:.4%}")
            rows.append(r)
    raw = raw_throughput(store, model, (1024 + 2 * 112, 1024 + 2 * 112))
    ok = [h for h in HALOS if all(r["agreement_exact"] >= 0.999 for r in rows if r["halo"] == h)]
    result = {"rows": rows, "raw_1248": raw, "default_halo": min(ok) if ok else None,
              "model": json.loads(model.with_suffix(".json").read_text())["training"]}
    (out / "halo_sweep.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def halo_table(result: dict[str, Any]) -> str:
    """Markdown of :func:`halo_sweep`'s rows."""
    raw = result["raw_1248"]["mpx_per_s"]
    lines = ["| blocks = tiles | halo (px) | evals/px | time (s) | image Mpx/s | share of raw, image px | "
             "agreement with exact halo | agreement with avg s=32 (crop) | accuracy (image) | accuracy (crop) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['block']}² | {r['halo'] or 'exact (112)'} | {r['evals_per_px']:.2f} | {r['seconds']:.1f} | "
                     f"{r['mpx_per_s']:.3f} | {r['mpx_per_s'] / raw:.0%} | {r['agreement_exact']:.3%} | "
                     f"{r['agreement_s32_crop']:.3%} | {r['accuracy']:.3%} | {r['accuracy_crop']:.3%} |")
    lines.append(f"\nraw network on one 1248² tile: {raw:.3f} Mpx/s; smallest halo with ≥ 99.9 % agreement "
                 f"at every block size: {result['default_halo']}")
    return "\n".join(lines)


def share(out: Path, *, halo: int | None, reps: int, block: int = 1024) -> dict[str, Any]:
    """End-to-end image-pixel rate of tile mode (``block``² blocks = tiles, ``halo``) as a share of the raw
    network rate on the tile it feeds the network (the block plus twice the halo), in ``reps`` interleaved
    pairs, so that a drift in the machine's speed touches both sides of each ratio alike."""
    from semscale.inference.members import resolve_members

    store = bench_store(out)
    model = train_model(out, seconds=420)
    facts = resolve_members([model])[1]
    pad = facts.halo_px if halo is None else -(-halo // facts.multiple) * facts.multiple
    name = f"share_b{block}_h{halo or 'exact'}"
    pairs = []
    for k in range(reps):
        raw = raw_throughput(store, model, (block + 2 * pad, block + 2 * pad))["mpx_per_s"]
        e2e = run_mode(store, model, name, warm=k == 0, mode="tile", block_size=block, tile_size=block,
                       halo=halo)["mpx_per_s"]
        pairs.append({"raw_mpx_per_s": raw, "image_mpx_per_s": e2e, "share": e2e / raw})
        log(f"  rep {k + 1}: raw {raw:.3f} Mpx/s, end to end {e2e:.3f} Mpx/s of image, share {e2e / raw:.1%}")
    shares = sorted(p["share"] for p in pairs)
    return {"block": block, "halo": halo, "tile_px": block + 2 * pad, "pairs": pairs,
            "median_share": float(np.median(shares)), "min_share": shares[0], "max_share": shares[-1]}


def _mosaic_subprocess(out: Path, size: int) -> dict[str, Any]:
    log(f"mosaic {size}² (fresh process)")
    proc = subprocess.run([sys.executable, __file__, "mosaic", "--out", str(out), "--size", str(size)],
                          capture_output=True, text=True, check=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    log(str(res))
    return res


RUNS: list[tuple[str, dict[str, Any]]] = [
    ("average_s256", {"mode": "average", "stride": 256}),
    ("average_s128", {"mode": "average", "stride": 128}),
    ("gaussian_s128", {"mode": "gaussian", "stride": 128}),
    ("tile_b1024", {"mode": "tile", "warm": True}),
    ("tile_b2048", {"mode": "tile", "block_size": 2048, "tile_size": 2048, "warm": True}),
    ("tile_b4096", {"mode": "tile", "block_size": 4096, "tile_size": 4096, "warm": True}),
    ("average_s64", {"mode": "average", "stride": 64}),
]
"""The timed Zarr→Zarr runs: name and ``InferenceConfig`` settings (``warm``: one untimed run first)."""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["all", "mosaic", "table", "halo", "halosweep", "share"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--reps", type=int, default=3, help="halo, share: interleaved repeats per variant")
    ap.add_argument("--train-seconds", type=float, default=420)
    ap.add_argument("--paper", action="store_true", help="mosaic: the trained paper U-Net instead of a tiny one")
    ap.add_argument("--halo", type=int, default=None, help="mosaic, share: inference.halo (default: exact)")
    ap.add_argument("--skip", nargs="*", default=[], help="parts to skip: s64 s32 workers mosaic")
    return ap


def main() -> None:
    args = _parser().parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SEMSCALE_PROGRESS", "0")
    if args.what == "mosaic":
        mosaic(args.out, args.size, paper=args.paper, halo=args.halo)
        return
    if args.what == "halo":
        print(json.dumps(halo(args.out, reps=args.reps), indent=2))
        return
    if args.what == "halosweep":
        print(halo_table(halo_sweep(args.out, train_seconds=args.train_seconds)))
        return
    if args.what == "share":
        r = share(args.out, halo=args.halo, reps=args.reps)
        print(json.dumps(r, indent=2))
        print(f"| {r['block']}² | {r['halo'] or 'exact'} | {r['tile_px']}² | {len(r['pairs'])} | "
              f"{r['median_share']:.1%} | {r['min_share']:.1%}–{r['max_share']:.1%} |")
        return
    if args.what == "table":
        print(markdown(json.loads((args.out / "results.json").read_text())))
        return
    results_path = args.out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}

    def save() -> None:
        results_path.write_text(json.dumps(results, indent=2, default=float))

    store = bench_store(args.out)
    model = train_model(args.out, seconds=args.train_seconds)
    results["model"] = json.loads(model.with_suffix(".json").read_text())["training"]
    results.setdefault("runs", {})
    for name, kw in RUNS:
        if name == "average_s64" and "s64" in args.skip:
            continue
        if name not in results["runs"]:
            results["runs"][name] = run_mode(store, model, name, **kw)
            save()
    if "raw" not in results:
        # a 1024² block plus its halo, a 2048² one, and the whole image plus halo (on the pooling grid)
        results["raw"] = [raw_throughput(store, model, hw) for hw in ((1248, 1248), (2272, 2272), (3088, 4320))]
        save()
    if "s32" not in args.skip and "average_s32" not in results["runs"]:
        lab32, res32 = s32_crop(store, model)
        np.save(args.out / "s32_crop_labels.npy", lab32)
        results["runs"]["average_s32"] = res32
        save()
    _accuracies(store, results, args.out)
    save()
    if "workers" not in args.skip and "workers" not in results:
        results["workers"] = [run_workers(store, model, n) for n in (1, 2)]
        save()
    if "mosaic" not in args.skip:
        results["mosaic"] = []
        for size in (4096, 16384):
            results["mosaic"].append(_mosaic_subprocess(args.out, size))
            save()
    print(markdown(results))


if __name__ == "__main__":
    main()
