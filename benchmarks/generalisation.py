"""The generalisation protocol (issue 14): do the U-Net's labels hold on images it never saw?

Usage::

    python benchmarks/generalisation.py [--setting default|coarse-noisy|overlap|fine-slow] [--size 512 [W]]
        [--times 0 2 5 10 20 30 120] [--eds-times 0 10 120] [--seed 0] [--epochs 16] [--steps 40]
        [--filters 8 16 32 64] [--patch 128] [--batch 8] [--lr 2e-3] [--workers 1]
        [--recipe paper|cpu] [--set KEY=VALUE ...] [--tta] [--workdir DIR [--reuse]] [--out result.json]
    python benchmarks/generalisation.py compare RESULT.json ...     # one table row per result

Simulates a campaign with the chosen simulator setting (``default``: the calibration; the others are the
evaluation-only settings of :mod:`semscale.synth.evaluation`, which no training uses): one image per
oxidation time, EDS maps only on the ``--eds-times`` images (``role: train``); the EDS maps of the other
images are never written (``role: predict``). Then ``semscale.run_campaign`` ingests, labels the EDS images
(EDS-guided targets), trains the U-Net on those targets and predicts every image. Scores against the exact
truth, per oxidation time: accuracy, mean IoU and the NiO-fraction absolute error (percentage points) of

* (a) the EDS-guided targets, on the EDS images;
* (b) the U-Net, on the images it never saw (role predict, no EDS) — and, for reference, on its own
  training images (kept apart, never pooled with (b)).

Totals pool the confusion matrices (pixel-weighted accuracy / mean IoU); the NiO MAE is the mean of the
per-image absolute errors. The training schedule defaults to the demo's (``semscale demo``); the options
override ``config.training`` with ``dataclasses.replace``. JSON goes to stdout (or ``--out``), a markdown
table to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("generalisation")

DEFAULT_TIMES = (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 120.0)
DEFAULT_EDS_TIMES = (0.0, 10.0, 120.0)
_DROPOUT = (0.0, 0.1, 0.1, 0.2, 0.3, 0.3)  # per U-Net level (the demo's for 4 levels), deeper levels 0.3
GROUPS = ("targets_on_eds", "unet_on_unseen", "unet_on_eds")
"""Totals: (a) targets on the EDS images, (b) U-Net on never-seen images, and U-Net on its training images."""


def sim_params(setting: str) -> Any:
    """The simulator constants of ``setting`` (``default`` or an evaluation setting)."""
    from semscale.synth.evaluation import evaluation_params
    from semscale.synth.params import DEFAULT_PARAMS

    return DEFAULT_PARAMS if setting == "default" else evaluation_params(setting)


def write_protocol_campaign(out: Path, *, setting: str, size: Sequence[int], times: Sequence[float],
                            eds_times: Sequence[float], seed: int, training: dict[str, Any] | None = None,
                            inference: dict[str, Any] | None = None,
                            labelling: dict[str, Any] | None = None) -> Path:
    """Simulate one image per time and write the campaign; only the ``eds_times`` images keep EDS maps.

    Every image is simulated with EDS (the SEM and truth do not depend on it: separate random streams);
    the EDS files of the other images are deleted and their entries get ``role: predict``. ``training``
    (default: the demo's schedule) and ``inference`` are written into the config as a user would write them
    (e.g. ``{"recipe": "cpu", "budget_min": 30}``), and so is ``labelling`` (keys of the labelling section).
    """
    import yaml

    from semscale.synth import write_campaign
    from semscale.synth.demo import DEMO_TRAINING

    missing = sorted(set(map(float, eds_times)) - set(map(float, times)))
    if missing:
        raise SystemExit(f"--eds-times {missing} are not among --times {list(times)}")
    path = write_campaign(out, n_images=len(times), shape=(size[0], size[-1]), times=times, seed=seed,
                          n_eds=len(times), name=f"generalisation-{setting}", params=sim_params(setting))
    data = yaml.safe_load(path.read_text())
    keep = set(map(float, eds_times))
    for entry in data["images"]:
        if float(entry["oxidation_min"]) not in keep:
            for rel in entry.pop("eds").values():
                (out / rel).unlink()
            entry["role"] = "predict"
    data["training"] = {"name": "unet", "seed": seed, **(DEMO_TRAINING if training is None else training)}
    data["inference"] = {"mode": "tile", **(inference or {})}
    if labelling:
        data["labelling"] = dict(labelling)
    data["ingest"] = {"chunk_size": 256}
    data["cluster"] = {"dashboard_address": "127.0.0.1:0"}  # a free loopback port: runs never collide
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def reuse_campaign(workdir: Path, *, inference: dict[str, Any] | None) -> Path:
    """The campaign already simulated in ``workdir``, with its inference section replaced: finished stages
    (ingest, labels, the trained model) are kept, and the prediction reruns only if its settings changed."""
    import yaml

    path = workdir / "campaign.yaml"
    data = yaml.safe_load(path.read_text())
    data["inference"] = {"mode": "tile", **(inference or {})}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def configure(path: Path, args: argparse.Namespace) -> Any:
    """Load the campaign config and apply the training / cluster overrides with ``dataclasses.replace``."""
    import semscale

    cfg = semscale.load_config(path)
    over: dict[str, Any] = {}
    if args.filters:
        over["filters"] = tuple(args.filters)
        over["dropout"] = tuple(_DROPOUT[min(i, len(_DROPOUT) - 1)] for i in range(len(args.filters)))
    for opt, name in (("epochs", "epochs"), ("steps", "steps_per_epoch"), ("patch", "patch_size"),
                      ("batch", "batch_size"), ("lr", "learning_rate")):
        if getattr(args, opt) is not None:
            over[name] = getattr(args, opt)
    training = dataclasses.replace(cfg.training, **over)
    inference = dataclasses.replace(cfg.inference, patch_size=training.patch_size)
    cluster = dataclasses.replace(cfg.cluster, n_workers=args.workers, threads_per_worker=1)
    return dataclasses.replace(cfg, training=training, inference=inference, cluster=cluster)


def nio_fraction(labels: np.ndarray) -> float:
    """Share of NiO among the labelled pixels (255 = unlabelled is left out)."""
    from semscale import IGNORE_LABEL
    from semscale.synth.params import NIO

    labelled = labels != IGNORE_LABEL
    return float((labels[labelled] == NIO).sum() / max(1, int(labelled.sum())))


def score_labels(truth: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, mean IoU, per-class IoU and NiO fractions of ``labels`` against ``truth``."""
    from semscale.analysis.metrics import score

    s = score(truth, labels, classes=classes)
    f_true, f_pred = nio_fraction(truth), nio_fraction(labels)
    return {"accuracy": s["accuracy"], "mean_iou": s["mean_iou"],
            "iou": {c: v["iou"] for c, v in s["per_class"].items()},
            "nio_fraction_truth": f_true, "nio_fraction": f_pred,
            "nio_abs_error_pt": 100.0 * abs(f_pred - f_true), "confusion": s["confusion"]}


def score_store(cfg: Any) -> list[dict[str, Any]]:
    """One row per image (sorted by time): its role, whether it has EDS, and the scores of its target
    and of the U-Net's prediction against the truth."""
    import semscale

    store = semscale.open_store(cfg.store, mode="r")
    rows = []
    for entry in sorted(cfg.images, key=lambda e: float(e.oxidation_min)):
        truth = np.asarray(store.labels(entry.id, "truth"))
        row: dict[str, Any] = {"id": entry.id, "time_min": float(entry.oxidation_min),
                               "role": entry.role, "eds": bool(entry.has_eds), "targets": None}
        if entry.has_eds:
            row["targets"] = score_labels(truth, np.asarray(store.labels(entry.id, "target")),
                                          cfg.classes)
        row["unet"] = None
        if cfg.model_name in store.prediction_models():
            pred = np.asarray(store.predictions(cfg.model_name, entry.id)["labels"])
            row["unet"] = score_labels(truth, pred, cfg.classes)
        rows.append(row)
    return rows


def pooled(scores: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any] | None:
    """Pixel-weighted accuracy / mean IoU over the summed confusions, and the per-image NiO MAE."""
    from semscale.analysis.metrics import scores_from_confusion

    if not scores:
        return None
    cm = np.sum([np.asarray(s["confusion"], np.int64) for s in scores], axis=0)
    s = scores_from_confusion(cm, classes=classes)
    return {"n_images": len(scores), "accuracy": s["accuracy"], "mean_iou": s["mean_iou"],
            "nio_mae_pt": float(np.mean([x["nio_abs_error_pt"] for x in scores]))}


def totals(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """The three groups of :data:`GROUPS`; an image is in exactly one of the two U-Net groups."""
    unseen = [r for r in rows if r["role"] == "predict" and not r["eds"]]
    seen = [r for r in rows if r["role"] == "train"]
    return {"targets_on_eds": pooled([r["targets"] for r in rows if r["eds"]], classes),
            "unet_on_unseen": pooled([r["unet"] for r in unseen if r["unet"]], classes),
            "unet_on_eds": pooled([r["unet"] for r in seen if r["unet"]], classes),
            "unseen_ids": [r["id"] for r in unseen], "eds_ids": [r["id"] for r in rows if r["eds"]]}


def _cells(s: dict[str, Any] | None, nio_key: str = "nio_abs_error_pt") -> str:
    if s is None:
        return "– | – | –"
    return f"{100 * s['accuracy']:.2f} % | {100 * s['mean_iou']:.1f} % | {s[nio_key]:.2f} pt"


def markdown(result: dict[str, Any]) -> str:
    """Per-time table and totals as markdown."""
    head = ("| time (min) | image | seen by training | targets: acc · mIoU · NiO err | "
            "U-Net: acc · mIoU · NiO err |\n|---|---|---|---|---|")
    lines = [f"setting `{result['setting']}`, {_shape_text(result['size'])} px", "", head]
    for r in result["rows"]:
        seen = "yes (EDS, target)" if r["role"] == "train" else "no"
        lines.append(f"| {r['time_min']:g} | {r['id']} | {seen} | "
                     f"{_cells(r['targets']).replace(' | ', ' · ')} | {_cells(r['unet']).replace(' | ', ' · ')} |")
    lines += ["", "| labels vs truth | images | accuracy | mean IoU | NiO-fraction MAE |", "|---|---|---|---|---|"]
    names = {"targets_on_eds": "(a) EDS-guided targets, EDS images",
             "unet_on_unseen": "(b) U-Net, images never seen", "unet_on_eds": "U-Net, its own training images"}
    for key in GROUPS:
        s = result["totals"][key]
        lines.append(f"| {names[key]} | {s['n_images'] if s else 0} | {_cells(s, 'nio_mae_pt')} |")
    timing = result["seconds"]
    stages = ", ".join(f"{k} {timing[k]:.0f} s" for k in ("label", "train", "predict") if k in timing)
    lines.append(f"\nsimulate {timing['simulate']:.0f} s, run_campaign {timing['run_campaign']:.0f} s ({stages})")
    return "\n".join(lines)


def compare(paths: Sequence[Path]) -> str:
    """One markdown row per result file: the totals, the training it had, and the stage times."""
    lines = ["| result | setting | training | targets, EDS images: acc · NiO MAE | U-Net, never seen: acc · mIoU "
             "· NiO MAE | U-Net, own images: acc | epochs · train min |", "|---|---|---|---|---|---|---|"]
    for path in paths:
        r = json.loads(Path(path).read_text())
        t = r["totals"]
        a, b, c = t["targets_on_eds"], t["unet_on_unseen"], t["unet_on_eds"]
        members = r.get("members") or [{}]
        epochs = "/".join(str(m.get("epochs_trained")) for m in members)
        minutes = "/".join(f"{m.get('train_minutes') or 0:.1f}" for m in members)
        given = dict(r.get("config_training") or {"schedule": "demo"})
        if (r.get("inference") or {}).get("tta"):
            given["inference.tta"] = True
        lines.append(
            f"| {Path(path).stem} | {r['setting']} | `{json.dumps(given, separators=(',', ':'))}` | "
            f"{100 * a['accuracy']:.2f} % · {a['nio_mae_pt']:.2f} pt | {100 * b['accuracy']:.2f} % · "
            f"{100 * b['mean_iou']:.1f} % · {b['nio_mae_pt']:.2f} pt | {100 * c['accuracy']:.2f} % | "
            f"{epochs} · {minutes} |")
    return "\n".join(lines)


def _shape_text(size: int | Sequence[int]) -> str:
    """``512²`` or ``1024×1536`` (older results store one edge)."""
    h, w = (size, size) if isinstance(size, int) else (size[0], size[-1])
    return f"{h}²" if h == w else f"{h}×{w}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from semscale.synth.evaluation import EVALUATION_SETTINGS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="default", choices=["default", *EVALUATION_SETTINGS])
    p.add_argument("--size", type=int, nargs="+", default=[512], metavar="PX",
                   help="image edge, or height and width (px)")
    p.add_argument("--times", type=float, nargs="+", default=list(DEFAULT_TIMES))
    p.add_argument("--eds-times", type=float, nargs="+", default=list(DEFAULT_EDS_TIMES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps", type=int, help="steps per epoch")
    p.add_argument("--filters", type=int, nargs="+")
    p.add_argument("--patch", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--recipe", choices=["paper", "cpu"],
                   help="write `training: {recipe: R}` instead of the demo's schedule (with --set on top)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a training key written into the config (YAML value), e.g. budget_min=30, or a key of "
                        "another section with its name, e.g. labelling.guided_sigma=2; repeatable")
    p.add_argument("--tta", action="store_true", help="inference with test-time augmentation (8 dihedral maps)")
    p.add_argument("--targets-only", action="store_true",
                   help="EDS maps on every image, and only ingest and label: the targets' scores on every time, "
                        "the same-image reference for the U-Net's scores on the images it never saw")
    p.add_argument("--reuse", action="store_true",
                   help="with --workdir: keep the campaign simulated, labelled and trained there (e.g. to score "
                        "--tta on the same model)")
    p.add_argument("--workers", type=int, default=1, help="local Dask workers (labelling, prediction)")
    p.add_argument("--workdir", type=Path, help="campaign folder (default: a temporary one, deleted)")
    p.add_argument("--out", type=Path, help="write the JSON here instead of stdout")
    args = p.parse_args(argv)
    if len(args.size) > 2:
        p.error(f"--size takes one edge or height and width, got {args.size}")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Simulate, run the campaign, score; the JSON-ready result."""
    import semscale

    t0 = time.perf_counter()
    sets = [_key_value(s) for s in args.sets]
    labelling = {k.partition(".")[2]: v for k, v in sets if k.startswith("labelling.")}
    unknown = sorted({k for k, _ in sets if "." in k and not k.startswith(("labelling.", "training."))})
    if unknown:
        raise SystemExit(f"--set takes training keys or labelling.KEY, got {unknown}")
    train_sets = {k.removeprefix("training."): v for k, v in sets if not k.startswith("labelling.")}
    training = None
    if args.recipe is not None or train_sets:
        training = {"recipe": args.recipe or "paper", **train_sets}
    inference = {"tta": True} if args.tta else None
    if args.targets_only:
        args.eds_times = list(args.times)
    if args.reuse and (workdir / "campaign.yaml").is_file():
        path = reuse_campaign(workdir, inference=inference)
    else:
        path = write_protocol_campaign(workdir, setting=args.setting, size=args.size, times=args.times,
                                       eds_times=args.eds_times, seed=args.seed, training=training,
                                       inference=inference, labelling=labelling)
    cfg = configure(path, args)
    t1 = time.perf_counter()
    stages = ("ingest", "label") if args.targets_only else ("ingest", "label", "train", "predict")
    summary = semscale.run_campaign(cfg, stages=stages)
    t2 = time.perf_counter()
    rows = score_store(cfg)
    from semscale.pipeline import models

    store = semscale.open_store(cfg.store, mode="r")
    members = [m for model in models(store, name=cfg.training.name) for m in model["members"]]
    return {"setting": args.setting, "size": args.size, "times": list(args.times),
            "eds_times": list(args.eds_times), "seed": args.seed, "store": str(cfg.store),
            "config_training": training, "config_labelling": labelling, "training": dataclasses.asdict(cfg.training),
            "inference": dataclasses.asdict(cfg.inference), "members": members,
            "rows": rows, "totals": totals(rows, cfg.classes),
            "seconds": {"simulate": t1 - t0, "run_campaign": t2 - t1, **summary["stage_seconds"]}}


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with the value read as YAML (``budget_min=30`` → 30, ``filters=[8, 16]`` → a list)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set expects KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        sys.stdout.write(compare([Path(a) for a in argv[1:]]) + "\n")
        return 0
    args = parse_args(argv)
    if args.workdir is not None:
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="semscale-generalisation-") as tmp:
            result = run(args, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    sys.stderr.write(markdown(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
