"""Time of the robustness sweep and of the report on a campaign of large images (issue 11).

Usage::

    python benchmarks/bench_report.py [--images 7] [--shape 2856 4096] [--crop N] [--cases one|all]
        [--workdir DIR] [--out result.json]

Simulates ``--images`` images (one per oxidation time 0, 2, 5, 10, 20, 30, 120 min) of ``--shape`` px with
the calibrated simulator, ingests them and gets a model without labelling: the shipped synthetic-pretrained
weights (``init_weights: synthetic``, the ``cpu`` recipe's 16…128 net) trained one short epoch on the
simulator's truth of the first, middle and last image (``label_source: truth``), so the predictions are
those of a working network. Then it times, each as ``semscale run`` runs it: ``predict`` (every image,
tile mode), ``robustness`` and ``report``.

``--cases one`` runs one level per perturbation (blur σ 1, brightness 1.2, noise σ 0.05, magnification 2)
plus the unperturbed image, and extrapolates the default sweep (19 cases) by segmented area: a case at
magnification m segments m² times the image, every other case the image once; ``--cases all`` runs the
default sweep itself. ``--crop`` sets
``robustness.crop`` (default: the config's, the whole image). JSON goes to stdout or ``--out``, a summary
to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TIMES = (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 120.0)
ONE_PER_KIND = {"blur_sigma": (0.0, 1.0), "brightness": (1.2,), "noise_sigma": (0.05,), "magnification": (2.0,)}


def make_campaign(out: Path, *, n_images: int, shape: tuple[int, int]) -> Path:
    """Simulate the campaign and write its config with the model recipe above; returns the config path."""
    import yaml

    from semscale.synth import write_campaign

    times = [TIMES[k % len(TIMES)] for k in range(n_images)]
    path = write_campaign(out, n_images=n_images, shape=shape, times=times, seed=0, n_eds=1,
                          name="bench-report")
    data = yaml.safe_load(path.read_text())
    train = {0, n_images // 2, n_images - 1}
    for k, entry in enumerate(data["images"]):
        entry["role"] = "train" if k in train else "predict"
        entry.pop("eds", None)
    data["training"] = {"recipe": "cpu", "label_source": "truth", "init_weights": "synthetic", "epochs": 1,
                        "steps_per_epoch": 20, "budget_min": None, "name": "unet"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def area(robustness: Any) -> float:
    """Segmented area of a sweep, in images: m² for a case at magnification m, 1 for any other case."""
    return sum(value**2 if kind == "magnification" else 1.0 for kind, value in robustness.cases())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=7)
    p.add_argument("--shape", type=int, nargs=2, default=(2856, 4096), metavar=("H", "W"))
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--cases", choices=("one", "all"), default="one")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    from semscale.config import RobustnessConfig, load_config
    from semscale.pipeline import run_campaign

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    t = time.perf_counter()
    cfg_path = make_campaign(work, n_images=args.images, shape=tuple(args.shape))
    simulate_s = time.perf_counter() - t
    cfg = load_config(cfg_path)
    sweep = ONE_PER_KIND if args.cases == "one" else {}
    robustness = dataclasses.replace(cfg.robustness, crop=args.crop if args.crop else cfg.robustness.crop,
                                     **sweep)
    cfg = dataclasses.replace(cfg, robustness=robustness)
    summary = run_campaign(cfg, stages=("ingest", "train", "predict", "robustness", "report"))
    seconds = summary["stage_seconds"]
    n_cases = len(robustness.cases())
    default_cases = len(RobustnessConfig().cases())
    per_image_area = seconds["robustness"] / (area(robustness) * args.images)
    result = {
        "images": args.images, "shape": list(args.shape), "crop": robustness.crop, "cases": n_cases,
        "simulate_s": round(simulate_s, 1),
        "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "robustness_s_per_image_area": round(per_image_area, 2),
        "robustness_default_sweep_s": round(per_image_area * area(RobustnessConfig()) * args.images, 1)
        if args.cases == "one" else round(seconds["robustness"], 1),
        "default_cases": default_cases,
        "robustness_accuracy": summary.get("robustness"),
    }
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    print(text)
    print(f"{args.images} images of {args.shape[0]}×{args.shape[1]} px: predict {seconds['predict']:.0f} s, "
          f"robustness {seconds['robustness']:.0f} s for {n_cases} cases "
          f"({per_image_area:.1f} s per image-sized case; the default {default_cases}-case sweep: "
          f"{result['robustness_default_sweep_s']:.0f} s), report {seconds['report']:.0f} s", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
