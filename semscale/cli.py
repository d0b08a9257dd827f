"""The ``semscale`` command line: it parses arguments (the parser: :mod:`semscale.cli_args`), applies them to
the config and calls the pipeline.

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

from semscale.cli_args import build_parser
from semscale.cli_text import (
    campaign_text,
    info_text,
    models_text,
    os_error_text,
    stats_text,
    to_json,
)
from semscale.config import CampaignConfig, InferenceConfig
from semscale.errors import ConfigError
from semscale.pipeline import STAGES
from semscale.store.location import StorePath, store_path

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from semscale.store.layout import CampaignStore

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


def _store_path(value: str) -> StorePath:
    """The store named on the command line: a store path or URL, or the store of a campaign config."""
    if Path(value).suffix in (".yaml", ".yml"):
        from semscale.config import load_config

        return load_config(value).store
    return store_path(value)


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
    from semscale.pipeline import predict, segment_file, segment_folder, stored_config
    from semscale.runtime.cluster import get_client
    from semscale.store.models import read_sidecar

    source = Path(args.source)
    for f in args.model_file or ():  # checked before any cluster starts or any output is touched
        read_sidecar(f)
    is_config = source.suffix in (".yaml", ".yml")
    is_store = not is_config and (store_path(args.source) / "zarr.json").exists()
    if source.is_dir() and not (is_config or is_store):
        cfg = _override(InferenceConfig(), args, OVERRIDES["inference"])
        files = segment_folder(source, cfg, model_files=[Path(p) for p in args.model_file or ()],
                               fmt=args.format or "tiff", out_dir=Path(args.output) if args.output else None)
        return Result({"files": files}, f"{source}: wrote {len(files)} files")
    if not (is_config or is_store):
        if args.format:
            raise ConfigError("Expected --format only with a FOLDER of images. Got an image file; the name "
                              "given to -o (.ome.tif, .tif, .png) chooses its format.")
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

        store = open_store(args.source)
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
    if args.ngff:  # every image with all its label images, for viewers that read only Zarr v2
        from semscale.io.ngff04 import export_ngff04

        groups = export_ngff04(store, Path(args.out), image_ids=args.image)
        return Result({"ngff": args.ngff, "files": [str(g) for g in groups]},
                      f"wrote {len(groups)} NGFF {args.ngff} groups (Zarr v2) to {args.out}")
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


def _config_and_store(args: argparse.Namespace) -> tuple[CampaignConfig, CampaignStore]:
    """The campaign of ``args.source``: a YAML config and the store it names, or a store and the config
    recorded in it."""
    from semscale.pipeline import stored_config
    from semscale.store import open_store

    if Path(args.source).suffix in (".yaml", ".yml"):
        config = _config(args, args.source)
        return config, open_store(config.store)
    store = open_store(_store_path(args.source))
    return stored_config(store), store


@_command("stats")
def _cmd_stats(args: argparse.Namespace) -> Result:
    from semscale.pipeline import stats

    config, store = _config_and_store(args)
    if args.netcdf:
        config = dataclasses.replace(config, stats=dataclasses.replace(config.stats, netcdf=True))
    result = stats(config, store, model=args.model, labels=args.labels)
    return Result(result, stats_text(result))


@_command("robustness")
def _cmd_robustness(args: argparse.Namespace) -> Result:
    from semscale.pipeline import robustness

    config, store = _config_and_store(args)
    result = robustness(config, store, model=args.model)
    lines = [f"{result['model']}: accuracy (mean over {len(result['images'])} images)"]
    lines += [f"  {case:<22} {100 * acc:6.2f} %" for case, acc in result["accuracy"].items()]
    return Result(result, "\n".join(lines))


@_command("report")
def _cmd_report(args: argparse.Namespace) -> Result:
    from semscale.pipeline import report

    config, store = _config_and_store(args)
    result = report(config, store, model=args.model)
    what = "wrote" if result["changed"] else "unchanged:"
    return Result(result, f"{what} {result['path']} ({len(result['files'])} figures)")


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
def _store_argument(args: argparse.Namespace) -> StorePath | None:
    """The store a command works on, from its positional argument (a config names its store)."""
    for name in ("config", "source", "store", "target"):
        value = getattr(args, name, None)
        if name == "store" and value == "import":
            value = args.files[0] if args.files else None
        if isinstance(value, (str, Path)):
            path = _store_path(str(value))
            return path if Path(str(value)).suffix in (".yaml", ".yml") or (path / "zarr.json").exists() else None
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
