"""The ``semscale`` argument parser: commands, their options, and the options they share.

Choices and defaults are read from :mod:`semscale.config`, so ``--help`` says what the config sections say;
nothing heavy is imported here (``semscale --help`` stays instant).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semscale._version import __version__
from semscale.config import ClusterConfig, InferenceConfig, TrainingConfig, choices
from semscale.io.export import FORMATS as EXPORT_FORMATS
from semscale.kernels.norm import NORMALISATIONS
from semscale.pipeline import STAGES

__all__ = ["build_parser"]


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
    p.add_argument("source", help="campaign YAML, store (.zarr), an image file (TIFF/PNG/npy) or a folder of them")
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
    p.add_argument("-o", "--output", help="image file: the label file (.ome.tif, .tif or .png; default "
                                         "IMAGE_labels.tif), with confidence (and probabilities) beside it; "
                                         "folder: the output folder (default: the input folder)")
    p.add_argument("--format", choices=EXPORT_FORMATS, help="folder: the files' format (default tiff)")

    p = sub.add_parser("export", parents=[out],
                       help="write predictions as OME-TIFF, ImageJ TIFF or PNG (palette, class names, pixel size)")
    p.add_argument("store", metavar="STORE|CONFIG", help="campaign store or its config")
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="ome-tiff", help="file format (default ome-tiff)")
    p.add_argument("--model", help="model whose predictions to export (default: the store's model)")
    p.add_argument("--probabilities", action="store_true", help="also the class probabilities (if predicted)")
    p.add_argument("--image", action="append", metavar="ID", help="only this image (repeatable)")
    p.add_argument("--ngff", choices=("0.4",),
                   help="instead: each image with its labels and maps as NGFF 0.4 / Zarr v2 (<id>.ome.zarr)")

    p = sub.add_parser("stats", parents=[out],
                       help="microstructure statistics over the time series (fractions, TPB, interfaces, sizes)")
    p.add_argument("source", metavar="CONFIG|STORE", help="campaign YAML or its store")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="statistics of this model's predictions (default: the config's model)")
    src.add_argument("--labels", choices=("target", "truth"), help="statistics of these labels instead")
    p.add_argument("--netcdf", action="store_true", help="also write report/stats.nc")

    p = sub.add_parser("robustness", parents=[out],
                       help="accuracy as the images are blurred, brightened, made noisy or resampled")
    p.add_argument("source", metavar="CONFIG|STORE", help="campaign YAML or its store")
    p.add_argument("--model", help="model to sweep (default: the config's model)")

    p = sub.add_parser("report", parents=[out], help="write report/index.html with the campaign's figures")
    p.add_argument("source", metavar="CONFIG|STORE", help="campaign YAML or its store")
    p.add_argument("--model", help="model to report on (default: the config's model)")

    p = sub.add_parser("run", parents=[out, cluster],
                       help="run a whole campaign: " + ", ".join(STAGES))
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
