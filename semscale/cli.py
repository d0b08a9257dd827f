"""The ``semscale`` command line: a thin layer that parses arguments and calls one library function.

Imports of the heavy stack (Keras/TensorFlow, dask, zarr) happen inside the command functions, so
``semscale --help`` is instant. Errors print as one line and exit with status 1 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
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
    from semscale.ingest import ingest_campaign

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

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    from semscale._progress import setup_logging
    from semscale.errors import SemscaleError

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
