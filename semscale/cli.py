"""The ``semscale`` command line: a thin layer that parses arguments and calls one library function.

Imports of the heavy stack (Keras/TensorFlow, dask, zarr) happen inside the command functions, so
``semscale --help`` is instant. Errors print as one line and exit with status 1 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from semscale._version import __version__

log = logging.getLogger("semscale")

_COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def _command(name: str) -> Callable[[Callable[[argparse.Namespace], int | None]], Callable[..., Any]]:
    def wrap(fn: Callable[[argparse.Namespace], int | None]) -> Callable[..., Any]:
        _COMMANDS[name] = fn
        return fn

    return wrap


# --- shared helpers ---------------------------------------------------------------------------------
def _load(config_path: str) -> Any:
    from semscale.config import load_config

    return load_config(config_path)


def _print(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler", metavar="ADDRESS", help="address of an existing Dask scheduler")
    g.add_argument("--workers", type=int, metavar="N", help="workers of the local cluster")
    g.add_argument("--threads", type=int, metavar="N", help="threads per worker of the local cluster")
    g.add_argument("--gpu", choices=["auto", "on", "off"], help="use dask-cuda GPU workers (default auto)")


def _cluster_kwargs(args: argparse.Namespace, config: Any | None = None) -> dict[str, Any]:
    base: dict[str, Any] = {}
    if config is not None:
        c = config.cluster
        base = {"address": c.address, "n_workers": c.n_workers, "threads_per_worker": c.threads_per_worker,
                "memory_limit": c.memory_limit, "gpu": c.gpu}
    for key, attr in (("address", "scheduler"), ("n_workers", "workers"), ("threads_per_worker", "threads"),
                      ("gpu", "gpu")):
        value = getattr(args, attr, None)
        if value is not None:
            base[key] = value
    return base


# --- commands ---------------------------------------------------------------------------------------
@_command("synth")
def _cmd_synth(args: argparse.Namespace) -> int:
    from semscale.synth import write_campaign

    kwargs: dict[str, Any] = {"n_images": args.images, "shape": tuple(args.shape), "seed": args.seed}
    if args.times:
        kwargs["times"] = tuple(args.times)
    if args.eds is not None:
        kwargs["n_eds"] = args.eds
    path = write_campaign(args.out, **kwargs)
    _print(f"wrote synthetic campaign: {path}")
    _print(f"next: semscale ingest {path}")
    return 0


@_command("ingest")
def _cmd_ingest(args: argparse.Namespace) -> int:
    from semscale.io.ingest import ingest_campaign

    config = _load(args.config)
    store = ingest_campaign(config, force=args.force, image_ids=args.image or None)
    _print(f"store: {store.path} ({len(store.image_ids())} images)")
    return 0


@_command("info")
def _cmd_info(args: argparse.Namespace) -> int:
    from semscale.store import open_store

    summary = open_store(args.store, mode="r").summary()
    if args.json:
        _print(json.dumps(summary, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary.get('name', '?')}[/] — {summary['path']}")
    console.print(f"classes: {', '.join(summary.get('classes', []))}   pixel size: "
                  f"{summary.get('pixel_size_um')} µm   semscale {summary.get('semscale_version', '?')}")
    table = Table(show_lines=False)
    for col in ("image", "shape", "chunks", "dtype", "levels", "sample", "t [min]", "role", "EDS",
                "labels", "predictions"):
        table.add_column(col)
    for im in summary["images"]:
        table.add_row(
            im["id"] + ("" if im["complete"] else " (incomplete)"),
            "×".join(map(str, im["shape"])), "×".join(map(str, im["chunks"])), im["dtype"],
            str(im["levels"]), str(im["sample"] or ""),
            "" if im["oxidation_min"] is None else f"{im['oxidation_min']:g}", str(im["role"] or ""),
            ",".join(im["eds"]), ",".join(im["labels"]), ",".join(im["predictions"]),
        )
    console.print(table)
    console.print(f"models: {', '.join(summary['models']) or 'none'}   stats: "
                  f"{'yes' if summary['stats'] else 'no'}")
    return 0


@_command("label")
def _cmd_label(args: argparse.Namespace) -> int:
    from semscale.io.ingest import ingest_campaign
    from semscale.pipeline import label

    config = _load(args.config)
    store = ingest_campaign(config)
    from semscale.runtime.cluster import get_client

    with get_client(**args.cluster_kwargs(config)) as client:
        result = label(config, store, overwrite=args.overwrite, client=client)
    _print(f"labelled: {', '.join(result.get('labelled', [])) or 'nothing to do'}")
    return 0


@_command("evaluate")
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from semscale.analysis.metrics import evaluate_store, format_confusion
    from semscale.store import open_store

    store = open_store(_store_path(args.target))
    pred: Any = ("predictions", args.model) if args.model else ("labels", args.labels)
    result = evaluate_store(store, args.image or None, pred=pred, ref=args.ref)
    if args.json:
        _print(json.dumps(result, indent=2, default=str))
        return 0
    what = f"model {args.model}" if args.model else f"labels {args.labels}"
    for image_id, res in result["images"].items():
        _print(format_confusion(res, title=f"{image_id}: {what} vs {args.ref}"))
        _print()
    if len(result["images"]) > 1 and result.get("total"):
        _print(format_confusion(result["total"], title=f"all images: {what} vs {args.ref}"))
    if not result["images"]:
        _print(f"no image has both {what} and {args.ref}")
        return 1
    return 0


@_command("train")
def _cmd_train(args: argparse.Namespace) -> int:
    from semscale.io.ingest import ingest_campaign
    from semscale.pipeline import train
    from semscale.training.fit import format_models, list_models

    config = _load(args.config)
    store = ingest_campaign(config)
    if args.scheduler or ((args.ensemble or config.training.ensemble) > 1 and args.parallel):
        from semscale.runtime.cluster import get_client

        with get_client(**args.cluster_kwargs(config)) as client:
            train(config, store, client=client, ensemble=args.ensemble, epochs=args.epochs,
                  steps_per_epoch=args.steps, fresh=args.fresh)
    else:
        train(config, store, ensemble=args.ensemble, epochs=args.epochs, steps_per_epoch=args.steps,
              fresh=args.fresh)
    _print(format_models([m for m in list_models(store) if m["name"] == config.training.name]))
    return 0


@_command("models")
def _cmd_models(args: argparse.Namespace) -> int:
    from semscale.store import open_store
    from semscale.training.fit import format_models, list_models

    models = list_models(open_store(_store_path(args.store), mode="r"))
    if args.json:
        _print(json.dumps(models, indent=2, default=str))
    else:
        _print(format_models(models) if models else "no models")
    return 0


@_command("predict")
def _cmd_predict(args: argparse.Namespace) -> int:
    import dataclasses

    from semscale.config import InferenceConfig
    from semscale.runtime.cluster import get_client

    overrides = {k: v for k, v in {"mode": args.mode, "stride": args.stride, "tta": args.tta or None,
                                   "probabilities": args.probabilities or None, "model": args.model}.items()
                 if v is not None}
    source = Path(args.source)
    if source.suffix in (".yaml", ".yml"):
        from semscale.io.ingest import ingest_campaign
        from semscale.pipeline import predict

        config = _load(args.source)
        config = dataclasses.replace(config, inference=dataclasses.replace(config.inference, **overrides))
        store = ingest_campaign(config)
        with get_client(**args.cluster_kwargs(config)) as client:
            results = predict(config, store, image_ids=args.image or None, client=client, overwrite=args.overwrite)
    elif (source / "zarr.json").exists():
        from semscale.inference import predict_to_store
        from semscale.store import open_store

        store = open_store(source)
        name = args.model or (store.model_names() or ["unet"])[0]
        models = [Path(p) for p in args.model_file] if args.model_file else name
        cfg = dataclasses.replace(InferenceConfig(), **overrides)
        with get_client(**args.cluster_kwargs()) as client:
            results = [predict_to_store(store, i, cfg, models=models, model_name=name, client=client,
                                        overwrite=args.overwrite)
                       for i in (args.image or store.image_ids())]
    else:
        return _predict_file(args, source, dataclasses.replace(InferenceConfig(), **overrides))
    for r in results:
        _print(f"{r['image']}: {r['computed']} of {r['blocks']} blocks computed ({r['mode']}, "
               f"{r['evaluations_per_pixel']:.2f} evaluations/px, {r['seconds']:.1f} s)")
    return 0


def _predict_file(args: argparse.Namespace, source: Path, cfg: Any) -> int:
    import dataclasses

    import numpy as np
    import tifffile

    from semscale.inference import segment_array
    from semscale.io.ingest import read_image

    if not args.model_file:
        from semscale.errors import ConfigError

        raise ConfigError("Expected --model-file MODEL.keras (repeatable) to segment an image file.")
    image = read_image(source)
    out = segment_array(image, models=[Path(p) for p in args.model_file],
                        cfg=dataclasses.replace(cfg, probabilities=False))
    target = Path(args.output or source.with_name(source.stem + "_labels.tif"))
    tifffile.imwrite(target, out["labels"].astype(np.uint8), compression="zlib")
    _print(f"wrote {target} (labels 0..K-1)")
    return 0


@_command("run")
def _cmd_run(args: argparse.Namespace) -> int:
    from semscale.pipeline import STAGES, run_campaign

    config = _load(args.config)
    stages = args.stages or list(STAGES)
    summary = run_campaign(config, stages=stages, cluster_kwargs=args.cluster_kwargs(config),
                           overwrite=args.overwrite, epochs=args.epochs, ensemble=args.ensemble)
    _report(config, summary)
    return 0


@_command("demo")
def _cmd_demo(args: argparse.Namespace) -> int:
    from semscale.pipeline import run_campaign, write_demo_campaign

    config = write_demo_campaign(args.out, size=args.size, seed=args.seed)
    _print(f"demo campaign: {config.source}")
    summary = run_campaign(config, cluster_kwargs=args.cluster_kwargs(config))
    _report(config, summary)
    return 0


def _report(config: Any, summary: dict[str, Any]) -> None:
    from semscale.analysis.metrics import format_confusion

    ev = summary.get("evaluate", {})
    for key, title in (("target_vs_truth", "EDS-guided targets vs ground truth"),
                       ("model_vs_truth", f"U-Net `{config.model_name}` vs ground truth"),
                       ("model_vs_target", f"U-Net `{config.model_name}` vs targets")):
        total = (ev.get(key) or {}).get("total")
        if total:
            _print(format_confusion(total, title=title))
            _print()
    if "stats" in summary:
        _print(f"phase fractions: {summary['stats']['csv']}")
        _print(f"plot:            {summary['stats']['plot']}")
    _print(f"store: {config.store}   ({summary['seconds']:.0f} s)")


def _store_path(value: str) -> Path:
    path = Path(value)
    if path.suffix in (".yaml", ".yml"):
        return _load(value).store
    return path


# --- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semscale",
        description="Dask-scaled phase segmentation (pore / NiO / Ni / YSZ) of SEM images of Ni/YSZ "
                    "electrodes: ingest, EDS-guided labels, U-Net training and blockwise inference.",
    )
    parser.add_argument("--version", action="version", version=f"semscale {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("synth", help="write a synthetic SEM+EDS campaign (TIFFs + campaign.yaml)")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--images", type=int, default=3, metavar="N", help="number of images (default 3)")
    p.add_argument("--shape", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"),
                   help="image size in px (default 1024 1024)")
    p.add_argument("--times", type=float, nargs="+", metavar="MIN",
                   help="oxidation times in minutes (default 0 2 5 10 20 30 120)")
    p.add_argument("--eds", type=int, metavar="N", help="how many images get EDS maps (default about half)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("ingest", help="read a campaign's images into its Zarr store")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")
    p.add_argument("--force", action="store_true", help="re-ingest even unchanged files")

    p = sub.add_parser("info", help="show what a store holds and which stages are complete")
    p.add_argument("store", help="campaign store (.zarr folder)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("label", help="EDS-guided target labels for images with EDS maps")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--overwrite", action="store_true", help="redo existing automatic targets")
    _cluster_args(p)

    p = sub.add_parser("evaluate", help="score labels or predictions against target/truth (confusion table)")
    p.add_argument("target", metavar="STORE|CONFIG", help="campaign store or its config")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="score predictions of this model")
    src.add_argument("--labels", default="target", help="score this label image (default target)")
    p.add_argument("--ref", default="truth", help="reference labels (default truth)")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("train", help="train the U-Net (ensemble) on the campaign's train images")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--ensemble", type=int, metavar="M", help="number of members (default training.ensemble)")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--steps", type=int, metavar="N", help="override training.steps_per_epoch")
    p.add_argument("--parallel", action="store_true", help="train members as parallel Dask tasks")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming checkpoints")
    _cluster_args(p)

    p = sub.add_parser("models", help="list a store's models with their metrics")
    p.add_argument("store", metavar="STORE|CONFIG")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="segment a campaign, a store's images or one image file")
    p.add_argument("source", help="campaign YAML, store (.zarr) or an image file (TIFF/PNG/npy)")
    p.add_argument("--model", help="model name in the store (default: the config's)")
    p.add_argument("--model-file", action="append", metavar="KERAS", help="model file(s); repeat for an ensemble")
    p.add_argument("--mode", choices=["average", "gaussian", "tile"], help="window blending (default tile)")
    p.add_argument("--stride", type=int, help="window stride in px (average/gaussian)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (8 flips/rotations)")
    p.add_argument("--probabilities", action="store_true", help="also write class probabilities (float16)")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="recompute completed blocks")
    p.add_argument("-o", "--output", help="output TIFF (image-file mode)")
    _cluster_args(p)

    p = sub.add_parser("run", help="run a whole campaign: ingest, label, train, predict, evaluate, stats")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--stages", nargs="+", choices=["ingest", "label", "train", "predict", "evaluate", "stats"])
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--ensemble", type=int, metavar="M")
    p.add_argument("--overwrite", action="store_true", help="redo labels and predictions")
    _cluster_args(p)

    p = sub.add_parser("demo", help="simulate a small campaign and run all of it (no GPU needed)")
    p.add_argument("out", nargs="?", default="semscale-demo", type=Path, help="folder (default semscale-demo)")
    p.add_argument("--size", type=int, default=512, help="image edge in px (default 512)")
    p.add_argument("--seed", type=int, default=0)
    _cluster_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from semscale.errors import SemscaleError
    from semscale.runtime.progress import setup_logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    setup_logging(args.verbose)
    args.cluster_kwargs = lambda config=None: _cluster_kwargs(args, config)
    try:
        return int(_COMMANDS[args.command](args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("semscale: interrupted\n")
        return 130
    except (SemscaleError, FileNotFoundError, PermissionError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"semscale: error: {exc}\n")
        return 1
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"semscale: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the "
                         "traceback)\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
