"""The ``semscale`` command line: it parses arguments, applies them to the config and calls the pipeline.

Options that mirror a config setting (``--epochs``, ``--mode``, ``--gpu`` …) become a new config section
(:func:`apply_overrides`, ``dataclasses.replace``); their choices and defaults are read from
:mod:`semscale.config`. Every command returns a result; ``main`` prints it on stdout — as JSON with
``--json``, else as text formatted by :mod:`semscale.cli_text` — and everything else (logs, progress, warnings) goes to stderr. Imports of the
heavy stack (Keras/TensorFlow, dask, zarr) happen inside the commands, so ``semscale --help`` is instant.
Errors print as one line and exit with status 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from semscale._version import __version__
from semscale.cli_text import campaign_text, info_text, models_text, stats_text, to_json
from semscale.config import CampaignConfig, ClusterConfig, InferenceConfig, TrainingConfig, choices
from semscale.errors import ConfigError
from semscale.io.export import FORMATS as EXPORT_FORMATS
from semscale.kernels.norm import NORMALISATIONS
from semscale.pipeline import STAGES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger("semscale")

__all__ = ["Result", "apply_overrides", "build_parser", "main"]

S = TypeVar("S", bound="DataclassInstance")


@dataclasses.dataclass
class Result:
    """What a command hands back: ``data`` for ``--json``, ``text`` otherwise, and the exit status."""

    data: Any
    text: str
    code: int = 0


Command = Callable[[argparse.Namespace], Result]
_COMMANDS: dict[str, Command] = {}


def _command(name: str) -> Callable[[Command], Command]:
    def wrap(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return wrap


# --- options -> config ------------------------------------------------------------------------------
OVERRIDES: dict[str, dict[str, str]] = {
    "cluster": {"scheduler": "address", "workers": "n_workers", "threads": "threads_per_worker", "gpu": "gpu",
                "dashboard": "dashboard_address"},
    "training": {"epochs": "epochs", "ensemble": "ensemble", "steps": "steps_per_epoch", "budget_min": "budget_min"},
    "inference": {"model": "model", "mode": "mode", "stride": "stride", "tta": "tta",
                  "probabilities": "probabilities"},
}
"""Per config section: argparse destination -> section field. An option left out (None) keeps the config's."""


def _override(section: S, args: argparse.Namespace, fields: Mapping[str, str]) -> S:
    changes = {field: getattr(args, dest) for dest, field in fields.items() if getattr(args, dest, None) is not None}
    return dataclasses.replace(section, **changes) if changes else section


def apply_overrides(config: CampaignConfig, args: argparse.Namespace) -> CampaignConfig:
    """``config`` with the options given on the command line replacing its sections' values (validated)."""
    sections = {name: _override(getattr(config, name), args, fields) for name, fields in OVERRIDES.items()}
    return dataclasses.replace(config, **sections)


def _config(args: argparse.Namespace, path: str | None = None) -> CampaignConfig:
    """The campaign config at ``path`` (default: the command's ``config`` argument), overridden by ``args``."""
    from semscale.config import load_config

    return apply_overrides(load_config(path or args.config), args)


def _store_path(value: str) -> Path:
    path = Path(value)
    if path.suffix in (".yaml", ".yml"):
        from semscale.config import load_config

        return load_config(path).store
    return path


# --- commands ---------------------------------------------------------------------------------------
@_command("synth")
def _cmd_synth(args: argparse.Namespace) -> Result:
    from semscale.synth import write_campaign

    kwargs: dict[str, Any] = {"n_images": args.images, "shape": tuple(args.shape), "seed": args.seed}
    if args.times:
        kwargs["times"] = tuple(args.times)
    if args.eds is not None:
        kwargs["n_eds"] = args.eds
    path = write_campaign(args.out, **kwargs)
    return Result({"config": path}, f"wrote synthetic campaign: {path}\nnext: semscale ingest {path}")


@_command("ingest")
def _cmd_ingest(args: argparse.Namespace) -> Result:
    from semscale.io.ingest import ingest_campaign

    store = ingest_campaign(_config(args), force=args.force, image_ids=args.image or None)
    ids = store.image_ids()
    return Result({"store": store.path, "images": ids}, f"store: {store.path} ({len(ids)} images)")


@_command("info")
def _cmd_info(args: argparse.Namespace) -> Result:
    from semscale.store import open_store

    summary = open_store(_store_path(args.store), mode="r").summary()
    return Result(summary, info_text(summary, wide=args.wide, tty=args.tty))


@_command("label")
def _cmd_label(args: argparse.Namespace) -> Result:
    from semscale.io.ingest import ingest_campaign
    from semscale.pipeline import label
    from semscale.runtime.cluster import get_client

    config = _config(args)
    store = ingest_campaign(config)
    with get_client(config.cluster) as client:
        result = label(config, store, overwrite=args.overwrite, client=client)
    return Result(result, f"labelled: {', '.join(result.get('labelled', [])) or 'nothing to do'}")


@_command("train")
def _cmd_train(args: argparse.Namespace) -> Result:
    from semscale.io.ingest import ingest_campaign
    from semscale.pipeline import models, train
    from semscale.runtime.cluster import get_client

    config = _config(args)
    store = ingest_campaign(config)
    # members train in this process unless a scheduler is given or parallel members are asked for
    use_cluster = args.scheduler is not None or (args.parallel and config.training.ensemble > 1)
    with get_client(config.cluster) if use_cluster else contextlib.nullcontext() as client:
        train(config, store, client=client, fresh=args.fresh)
    trained = models(store, name=config.training.name)
    return Result({"store": store.path, "models": trained}, models_text(trained, wide=args.wide, tty=args.tty))


@_command("models")
def _cmd_models(args: argparse.Namespace) -> Result:
    from semscale.pipeline import models
    from semscale.store import open_store

    if args.store == "import":
        return _import_models(args)
    if args.files:
        raise ConfigError(f"Expected `semscale models STORE` or `semscale models import STORE FILE...`. Got extra "
                          f"arguments {args.files}.")
    found = models(open_store(_store_path(args.store), mode="r"))
    return Result(found, models_text(found, wide=args.wide, tty=args.tty))


def _import_models(args: argparse.Namespace) -> Result:
    from semscale.inference.published import import_models
    from semscale.store import open_store

    if len(args.files) < 2 or not args.name:
        raise ConfigError("Expected `semscale models import STORE FILE... --name NAME`. Got "
                          f"{len(args.files)} path(s) and name {args.name!r}.")
    store = open_store(_store_path(args.files[0]), mode="r+")
    row = import_models(store, args.files[1:], name=args.name, normalisation=args.normalisation,
                        mc_dropout=args.mc_dropout, seed=args.seed, classes=args.classes, overwrite=args.overwrite)
    return Result(row, models_text([row], wide=args.wide, tty=args.tty))


@_command("predict")
def _cmd_predict(args: argparse.Namespace) -> Result:
    from semscale.pipeline import predict, segment_file, stored_config
    from semscale.runtime.cluster import get_client
    from semscale.store.models import read_sidecar

    source = Path(args.source)
    for f in args.model_file or ():  # checked before any cluster starts or any output is touched
        read_sidecar(f)
    is_config, is_store = source.suffix in (".yaml", ".yml"), (source / "zarr.json").exists()
    if not (is_config or is_store):
        cfg = _override(InferenceConfig(), args, OVERRIDES["inference"])
        files = segment_file(source, cfg, model_files=[Path(p) for p in args.model_file or ()],
                             output=Path(args.output) if args.output else None)
        return Result({"output": files[0], "files": files}, "\n".join(f"wrote {f}" for f in files))
    if is_config:
        from semscale.io.ingest import ingest_campaign

        config = _config(args, args.source)
        store = ingest_campaign(config)
    else:
        from semscale.store import open_store

        store = open_store(source)
        config = apply_overrides(stored_config(store), args)
    with get_client(config.cluster) as client:
        results = predict(config, store, image_ids=args.image or None, client=client, overwrite=args.overwrite,
                          model_files=[Path(p) for p in args.model_file or ()])
    text = "\n".join(f"{r['image']}: {r['computed']} of {r['blocks']} blocks computed ({r['mode']}, "
                     f"{r['evaluations_per_pixel']:.2f} evaluations/px, {r['seconds']:.1f} s)" for r in results)
    return Result({"store": store.path, "model": config.model_name, "images": results}, text)


@_command("evaluate")
def _cmd_evaluate(args: argparse.Namespace) -> Result:
    from semscale.analysis.metrics import format_confusion
    from semscale.pipeline import evaluate
    from semscale.store import open_store

    store = open_store(_store_path(args.target))
    result = evaluate(store, model=args.model, labels=args.labels, ref=args.ref, image_ids=args.image)
    what = f"model {args.model}" if args.model else f"labels {args.labels}"
    parts = [format_confusion(res, title=f"{image_id}: {what} vs {args.ref}") + "\n"
             for image_id, res in result["images"].items()]
    if len(result["images"]) > 1 and result.get("total"):
        parts.append(format_confusion(result["total"], title=f"all images: {what} vs {args.ref}"))
    return Result(result, "\n".join(parts).rstrip("\n"))


@_command("export")
def _cmd_export(args: argparse.Namespace) -> Result:
    from semscale.pipeline import export
    from semscale.store import open_store

    store = open_store(_store_path(args.store), mode="r")
    model = args.model
    if model is None:
        have = store.prediction_models()
        named = (store.meta.get("config") or {}).get("training", {}).get("name")
        model = named if named in have else (have[0] if len(have) == 1 else None)
        if model is None:
            raise ConfigError(f"Expected --model NAME for {store.path}. Got predictions of "
                              f"{', '.join(have) or 'no model'}; pass the one to export.")
    files = export(store, Path(args.out), model=model, fmt=args.format, probabilities=args.probabilities,
                   image_ids=args.image)
    return Result({"model": model, "files": files}, f"{model}: wrote {len(files)} files to {args.out}")


@_command("stats")
def _cmd_stats(args: argparse.Namespace) -> Result:
    from semscale.pipeline import stats, stored_config
    from semscale.store import open_store

    source = Path(args.source)
    if source.suffix in (".yaml", ".yml"):
        config = _config(args, args.source)
        store = open_store(config.store)
    else:
        store = open_store(source)
        config = stored_config(store)
    if args.netcdf:
        config = dataclasses.replace(config, stats=dataclasses.replace(config.stats, netcdf=True))
    result = stats(config, store, model=args.model, labels=args.labels)
    return Result(result, stats_text(result))


@_command("run")
def _cmd_run(args: argparse.Namespace) -> Result:
    from semscale.pipeline import run_campaign

    config = _config(args)
    summary = run_campaign(config, stages=args.stages or STAGES, overwrite=args.overwrite)
    return Result(summary, campaign_text(config, summary))


@_command("demo")
def _cmd_demo(args: argparse.Namespace) -> Result:
    from semscale.pipeline import run_campaign
    from semscale.synth.demo import write_demo_campaign

    config = apply_overrides(write_demo_campaign(args.out, size=args.size, seed=args.seed), args)
    log.info("demo campaign: %s", config.source)
    summary = run_campaign(config)
    return Result({"config": config.source, **summary}, campaign_text(config, summary))


# --- parser -----------------------------------------------------------------------------------------
def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Options shared by several commands: output (``--json``, ``--break-lock``) and the cluster section."""
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", help="print only a JSON result on stdout")
    out.add_argument("--break-lock", action="store_true",
                     help="remove the store's writer lock first (only when its holder is known to be gone)")
    cluster = argparse.ArgumentParser(add_help=False)
    g = cluster.add_argument_group("cluster (override the config's `cluster` section)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="address of an existing Dask scheduler")
    g.add_argument("--workers", type=int, metavar="N", help="workers of the local cluster")
    g.add_argument("--threads", type=int, metavar="N", help="threads per worker of the local cluster")
    g.add_argument("--gpu", choices=choices(ClusterConfig, "gpu"),
                   help=f"dask-cuda GPU workers (default {ClusterConfig.gpu})")
    g.add_argument("--dashboard", metavar="HOST:PORT",
                   help=f"dashboard address of a local cluster (default {ClusterConfig.dashboard_address})")
    return out, cluster


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semscale",
        description="Dask-scaled phase segmentation (pore / NiO / Ni / YSZ) of SEM images of Ni/YSZ "
                    "electrodes: ingest, EDS-guided labels, U-Net training and blockwise inference.",
    )
    parser.add_argument("--version", action="version", version=f"semscale {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (also TensorFlow's and Dask's start-up messages)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    out, cluster = _parents()
    wide = argparse.ArgumentParser(add_help=False)
    wide.add_argument("--wide", action="store_true", help="one table row per item even when piped")

    p = sub.add_parser("synth", parents=[out], help="write a synthetic SEM+EDS campaign (TIFFs + campaign.yaml)")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--images", type=int, default=3, metavar="N", help="number of images (default 3)")
    p.add_argument("--shape", type=int, nargs=2, default=(1024, 1024), metavar=("H", "W"),
                   help="image size in px (default 1024 1024)")
    p.add_argument("--times", type=float, nargs="+", metavar="MIN",
                   help="oxidation times in minutes (default 0 2 5 10 20 30 120)")
    p.add_argument("--eds", type=int, metavar="N", help="how many images get EDS maps (default about half)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("ingest", parents=[out], help="read a campaign's images into its Zarr store")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")
    p.add_argument("--force", action="store_true", help="re-ingest even unchanged files")

    p = sub.add_parser("info", parents=[out, wide], help="show what a store holds and which stages are complete")
    p.add_argument("store", metavar="STORE|CONFIG", help="campaign store (.zarr folder) or its config")

    p = sub.add_parser("label", parents=[out, cluster], help="EDS-guided target labels for images with EDS maps")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--overwrite", action="store_true", help="redo existing automatic targets")

    p = sub.add_parser("evaluate", parents=[out],
                       help="score labels or predictions against target/truth (confusion table)")
    p.add_argument("target", metavar="STORE|CONFIG", help="campaign store or its config")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="score predictions of this model")
    src.add_argument("--labels", default="target", help="score this label image (default target)")
    p.add_argument("--ref", default="truth", help="reference labels (default truth)")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")

    p = sub.add_parser("train", parents=[out, wide, cluster],
                       help="train the U-Net (ensemble) on the campaign's train images")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--ensemble", type=int, metavar="M",
                   help=f"number of members (default training.ensemble, {TrainingConfig.ensemble})")
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--steps", type=int, metavar="N", help="override training.steps_per_epoch")
    p.add_argument("--budget-min", type=float, metavar="MIN", help="override training.budget_min (minutes)")
    p.add_argument("--parallel", action="store_true", help="train members as parallel Dask tasks")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming checkpoints")

    p = sub.add_parser("models", parents=[out, wide],
                       help="list a store's models; `models import STORE FILE...` brings in Keras HDF5 models")
    p.add_argument("store", metavar="STORE|CONFIG|import")
    p.add_argument("files", nargs="*", metavar="STORE FILE", help="with `import`: the store, then HDF5 file(s)")
    p.add_argument("--name", help="import: model name in the store")
    p.add_argument("--normalisation", choices=NORMALISATIONS, default="image",
                   help="import: how the model expects its input (patch-l2: the published study's per-window "
                        "L2 norm along the rows; image: semscale's per-image percentiles)")
    p.add_argument("--mc-dropout", type=int, default=0, metavar="N",
                   help="import: N Monte-Carlo dropout passes at inference (mean and std); 0: dropout off")
    p.add_argument("--seed", type=int, default=0, help="import: seed of the Monte-Carlo dropout masks")
    p.add_argument("--classes", nargs="+", help="import: output class names in order (default: the store's)")
    p.add_argument("--overwrite", action="store_true", help="import: replace an existing model of that name")

    p = sub.add_parser("predict", parents=[out, cluster],
                       help="segment a campaign, a store's images or one image file")
    p.add_argument("source", help="campaign YAML, store (.zarr) or an image file (TIFF/PNG/npy)")
    p.add_argument("--model", help="model name in the store (default: inference.model, else training.name)")
    p.add_argument("--model-file", action="append", metavar="KERAS",
                   help="model file(s) (image file, or instead of the store's model); repeat for an ensemble")
    p.add_argument("--mode", choices=choices(InferenceConfig, "mode"),
                   help=f"window blending (default {InferenceConfig.mode})")
    p.add_argument("--stride", type=int, help="window stride in px (average/gaussian)")
    p.add_argument("--tta", action="store_true", default=None, help="test-time augmentation (8 flips/rotations)")
    p.add_argument("--probabilities", action="store_true", default=None,
                   help="also write class probabilities (float16)")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="recompute completed blocks")
    p.add_argument("-o", "--output", help="image-file mode: the label file (.ome.tif, .tif or .png; default "
                                         "IMAGE_labels.tif), with confidence (and probabilities) beside it")

    p = sub.add_parser("export", parents=[out],
                       help="write predictions as OME-TIFF, ImageJ TIFF or PNG (palette, class names, pixel size)")
    p.add_argument("store", metavar="STORE|CONFIG", help="campaign store or its config")
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="ome-tiff", help="file format (default ome-tiff)")
    p.add_argument("--model", help="model whose predictions to export (default: the store's model)")
    p.add_argument("--probabilities", action="store_true", help="also the class probabilities (if predicted)")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")

    p = sub.add_parser("stats", parents=[out],
                       help="microstructure statistics over the time series (fractions, TPB, interfaces, sizes)")
    p.add_argument("source", metavar="CONFIG|STORE", help="campaign YAML or its store")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="statistics of this model's predictions (default: the config's model)")
    src.add_argument("--labels", choices=("target", "truth"), help="statistics of these labels instead")
    p.add_argument("--netcdf", action="store_true", help="also write report/stats.nc")

    p = sub.add_parser("run", parents=[out, cluster],
                       help="run a whole campaign: ingest, label, train, predict, evaluate, stats")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("--stages", nargs="+", choices=STAGES)
    p.add_argument("--epochs", type=int, help="override training.epochs")
    p.add_argument("--ensemble", type=int, metavar="M", help="override training.ensemble")
    p.add_argument("--budget-min", type=float, metavar="MIN", help="override training.budget_min (minutes)")
    p.add_argument("--overwrite", action="store_true", help="redo labels and predictions")

    p = sub.add_parser("demo", parents=[out, cluster],
                       help="simulate a small campaign and run all of it (no GPU needed)")
    p.add_argument("out", nargs="?", default="semscale-demo", type=Path, help="folder (default semscale-demo)")
    p.add_argument("--size", type=int, default=512, help="image edge in px (default 512)")
    p.add_argument("--seed", type=int, default=0)
    return parser


def _store_argument(args: argparse.Namespace) -> Path | None:
    """The store a command works on, from its positional argument (a config names its store)."""
    for name in ("config", "source", "store", "target"):
        value = getattr(args, name, None)
        if name == "store" and value == "import":
            value = args.files[0] if args.files else None
        if isinstance(value, (str, Path)):
            path = _store_path(str(value))
            return path if path != Path(value) or (path / "zarr.json").exists() else None
    return None


def _execute(args: argparse.Namespace) -> Result:
    """Run the command with stdout pointed at stderr, so only ``main`` writes the result to stdout."""
    from semscale.runtime.progress import filter_native_stderr

    quiet = contextlib.nullcontext() if args.verbose else filter_native_stderr()
    with quiet, contextlib.redirect_stdout(sys.stderr):
        if getattr(args, "break_lock", False):
            from semscale.store.lock import break_lock

            store = _store_argument(args)
            if store is None:
                raise ConfigError(f"Expected `semscale {args.command} --break-lock` to name a store or a "
                                  "campaign config. Got neither.")
            if break_lock(store) is None:
                log.info("%s has no writer lock", store)
        return _COMMANDS[args.command](args)


def os_error_text(exc: OSError) -> str:
    """One line for an operating-system error: the file, what happened, and what to do."""
    import errno

    what = exc.strerror or str(exc)
    where = f" {exc.filename}" if exc.filename else ""
    fixes = {
        errno.ENOSPC: "free space (or point `store:` at a larger disk) and rerun: finished blocks are kept",
        errno.EDQUOT: "free space within your quota and rerun: finished blocks are kept",
        errno.EROFS: "the file system is read-only; write the store somewhere writable",
        errno.EACCES: "check the permissions of that path",
    }
    fix = fixes.get(exc.errno or 0, "check that path and rerun (--debug shows the traceback)")
    return f"Expected to read or write{where}. Got '{what}'; {fix}."


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from semscale.errors import SemscaleError
    from semscale.runtime.progress import setup_logging

    setup_logging(args.verbose)  # before TensorFlow or distributed are imported
    args.tty = sys.stdout.isatty()
    try:
        result = _execute(args)
    except KeyboardInterrupt:
        sys.stderr.write("semscale: interrupted\n")
        return 130
    except (SemscaleError, FileNotFoundError, PermissionError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"semscale: error: {exc}\n")
        return 1
    except OSError as exc:  # disk full, read-only or unreachable file systems: the file and the fix
        if args.debug:
            raise
        sys.stderr.write(f"semscale: error: {os_error_text(exc)}\n")
        return 1
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"semscale: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the "
                         "traceback)\n")
        return 2
    text = to_json(result.data) if args.json else result.text
    if text:
        sys.stdout.write(text + "\n")
    return result.code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
