"""Accuracy and speed of the automatic EDS-guided target labels (``semscale.labelling``).

Study (simulator data, no tuning between campaigns):

* two campaigns with different seeds, each ``--n-images`` images of ``--size``² px at oxidation times
  0, 10, 30, 120 min (cycled), all with EDS; every image is labelled by one random forest trained on the
  automatic seeds pooled over the campaign, then scored against the simulator's ground truth: overall
  accuracy, mean IoU, the per-class confusion matrix and accuracy within / beyond 2 px of a phase boundary;
* the labelling time of one full-size 2856×4096 image (the paper's semi-manual route: about 240 min).

Usage::

    python benchmarks/bench_labelling.py --out labelling_results.json            # full study
    python benchmarks/bench_labelling.py --size 512 --n-images 2 --no-big        # quick check

The forest settings default to those the figures in ``benchmarks/README.md`` were measured with (48 trees,
10 000 seeds per class and image); ``--config-defaults`` uses the labelling config's defaults instead.
Writes a JSON file with every figure and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from semscale.analysis.metrics import evaluate_store, format_confusion
from semscale.config import LabellingConfig
from semscale.labelling import label_store
from semscale.store import CampaignStore, create_store
from semscale.synth import add_to_store, simulate

TIMES = (0, 10, 30, 120)
README_FOREST = {"n_estimators": 48, "max_seeds_per_class": 10_000}
"""The forest settings of the published figures (the labelling stage's defaults when they were measured)."""


def campaign(root: Path, seed: int, n_images: int, size: int) -> tuple[CampaignStore, dict[str, Any]]:
    store = create_store(root / f"campaign_{seed}.zarr", name=f"labelling-study-{seed}", pixel_size_um=0.04458)
    truth_shift = {}
    for k in range(n_images):
        t = TIMES[k % len(TIMES)]
        image_id = f"s{seed}_t{t:03d}_{k}"
        im = simulate((size, size), oxidation_min=t, seed=1000 * seed + k)
        add_to_store(store, image_id, im, sample="A")
        truth_shift[image_id] = list(im.meta["eds_shift_px"])
    return store, truth_shift


def study(store: CampaignStore, truth_shift: dict[str, Any], cfg: LabellingConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    summary = label_store(store, None, cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    ev = evaluate_store(store, pred=("labels", "target"), ref="truth")
    per_image = {}
    for image_id, r in ev["images"].items():
        reg = summary["images"][image_id]["registration"]
        err = np.subtract(reg["shift_px"], truth_shift[image_id])
        per_image[image_id] = {
            "accuracy": r["accuracy"], "mean_iou": r["mean_iou"],
            "boundary_accuracy": r["boundary_split"]["boundary"]["accuracy"],
            "interior_accuracy": r["boundary_split"]["interior"]["accuracy"],
            "boundary_error_share": r["boundary_split"]["boundary_error_share"],
            "shift_est_px": reg["shift_px"], "shift_true_px": truth_shift[image_id],
            "shift_error_px": float(np.abs(err).max()), "registration_quality": reg["quality"],
            "nio_rule": summary["images"][image_id]["nio"], "seeds": summary["images"][image_id]["seeds"],
        }
    return {"seconds": seconds, "fit_seconds": summary["fit_seconds"], "seeds": summary["seeds"],
            "images": per_image, "total": ev["total"]}


def big_image(root: Path, seed: int, cfg: LabellingConfig) -> dict[str, Any]:
    store = create_store(root / "big.zarr", name="big", pixel_size_um=0.04458)
    t0 = time.perf_counter()
    im = simulate((2856, 4096), oxidation_min=30, seed=seed)
    sim_s = time.perf_counter() - t0
    add_to_store(store, "big", im)
    t0 = time.perf_counter()
    label_store(store, None, cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    r = evaluate_store(store, ref="truth")["images"]["big"]
    return {"shape": [2856, 4096], "label_seconds": seconds, "simulate_seconds": sim_s,
            "accuracy": r["accuracy"], "mean_iou": r["mean_iou"],
            "speedup_vs_240_min": 240 * 60 / seconds}


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, res in results["campaigns"].items():
        tot = res["total"]
        split = tot["boundary_split"]
        lines.append(f"### campaign seed {name}: accuracy {tot['accuracy']:.4f}, mean IoU {tot['mean_iou']:.4f}")
        lines.append("")
        lines.append("| image | accuracy | mean IoU | boundary acc. | interior acc. | errors in boundary band |"
                     " EDS shift error (px) | NiO rule |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for i, r in res["images"].items():
            lines.append(f"| {i} | {r['accuracy']:.4f} | {r['mean_iou']:.4f} | {r['boundary_accuracy']:.4f} | "
                         f"{r['interior_accuracy']:.4f} | {r['boundary_error_share']:.1%} | "
                         f"{r['shift_error_px']:.2f} | {r['nio_rule']} |")
        lines.append("")
        lines.append(f"boundary band (≤{split['width_px']:g} px): {split['boundary_area_share']:.1%} of pixels, "
                     f"{split['boundary_error_share']:.1%} of errors; labelling {res['seconds']:.0f} s "
                     f"(forest fit {res['fit_seconds']:.0f} s)")
        lines.append("")
        lines.append("```")
        lines.append(format_confusion(tot))
        lines.append("```")
        lines.append("")
    if "big" in results:
        b = results["big"]
        lines.append(f"2856×4096 image: labelled in {b['label_seconds']:.0f} s "
                     f"(accuracy {b['accuracy']:.4f}); the paper's semi-manual route ≈ 240 min → "
                     f"{b['speedup_vs_240_min']:.0f}× faster")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="side of the campaign images (px)")
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="campaign seeds")
    ap.add_argument("--no-big", action="store_true", help="skip the 2856×4096 timing")
    ap.add_argument("--workdir", type=Path, default=None, help="where to put the stores (default: temp)")
    ap.add_argument("--out", type=Path, default=None, help="JSON results file")
    ap.add_argument("--config-defaults", action="store_true",
                    help="label with LabellingConfig() (default: the settings of the README figures)")
    args = ap.parse_args()
    cfg = LabellingConfig() if args.config_defaults else dataclasses.replace(LabellingConfig(), **README_FOREST)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"size": args.size, "n_images": args.n_images, "times_min": list(TIMES),
                     "labelling": dataclasses.asdict(cfg)},
        "campaigns": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            store, truth_shift = campaign(root, seed, args.n_images, args.size)
            results["campaigns"][str(seed)] = study(store, truth_shift, cfg)
            logging.info("campaign %s: accuracy %.4f", seed, results["campaigns"][str(seed)]["total"]["accuracy"])
        if not args.no_big:
            results["big"] = big_image(root, seed=99, cfg=cfg)
    text = markdown(results)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
