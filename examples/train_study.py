"""Central-claim study: a U-Net trained only on automatic EDS-guided targets beats those targets.

On simulated Ni/YSZ images (ground truth known), this script

1. simulates one training image (role ``train``) per ``--train-times`` entry and one held-out image (role
   ``predict``; never read by the training) per ``--test-times`` entry, all with EDS maps, into a fresh
   campaign store (image k is simulated with seed ``--seed`` + 101 k);
2. makes the automatic EDS-guided targets ``labels/target`` with :func:`semscale.labelling.label_store`
   (``--targets truth`` copies the ground truth instead: a stand-in for debugging only, which proves
   nothing about the claim);
3. trains one U-Net on the targets of the training images (:func:`semscale.training.fit.train_member`);
4. segments the held-out images whole (fully convolutional, reflection padding) and scores the targets and
   the U-Net against the ground truth (accuracy, mean IoU, per class).

Results go to ``<out>/<name>_results.json`` and to the log. Example (about 25 min on 2 CPU cores)::

    nice python examples/train_study.py --out study --size 768 --train-times 0 5 20 120 --test-times 10 60 \\
        --filters 8 16 32 64 --patch 128 --batch 16 --steps 40 --epochs 50 --lr 2e-3
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("train_study")


def build_store(out: Path, *, size: int, train_times: list[float], test_times: list[float], seed: int) -> object:
    from semscale.store import create_store
    from semscale.synth import add_to_store, simulate

    path = out / "study.zarr"
    if path.exists():
        shutil.rmtree(path)
    store = create_store(path, name="train-study", pixel_size_um=0.04458)
    times = [*train_times, *test_times]
    for k, t in enumerate(times):
        role = "train" if k < len(train_times) else "predict"
        image_id = f"{role}_{k}"
        sim = simulate((size, size), oxidation_min=t, seed=seed + 101 * k)
        add_to_store(store, image_id, sim, chunks=512, eds_chunks=256, role=role)
        log.info("simulated %s (%s, %g min)", image_id, role, t)
    return store


def score(ref: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    from semscale.analysis.metrics import confusion_matrix, scores_from_confusion

    s = scores_from_confusion(confusion_matrix(ref, pred, n_classes=len(classes)), classes=classes)
    return {"accuracy": s["accuracy"], "mean_iou": s["mean_iou"],
            "iou": {c: s["per_class"][c]["iou"] for c in classes}, "confusion": s["confusion"]}


def segment_whole(model: object, image: np.ndarray, multiple: int, *, tta: bool = False) -> np.ndarray:
    """Labels of a whole normalised image: pad (reflect) to a multiple of ``multiple`` px, one pass, crop.
    ``tta``: mean softmax over the 8 flips/rotations (:func:`semscale.inference.tta_apply`)."""
    import keras

    from semscale.inference import tta_apply

    def fn(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[1:3]
        ph, pw = (-h) % multiple, (-w) % multiple
        xp = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")
        return keras.ops.convert_to_numpy(model.predict_on_batch(xp))[:, :h, :w]

    x = image[None, ..., None].astype(np.float32)
    prob = tta_apply(fn, x, np)[0] if tta else fn(x)[0]
    return np.argmax(prob, axis=-1).astype(np.uint8)


class TimeBudget:
    """Keras callback factory: stop training after ``minutes`` (checked at epoch ends)."""

    def __new__(cls, minutes: float) -> object:
        import keras

        class _Budget(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                if time.perf_counter() - self.t0 > minutes * 60:
                    log.warning("time budget of %.1f min reached after epoch %d", minutes, epoch + 1)
                    self.model.stop_training = True

        return _Budget()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("train-study"))
    ap.add_argument("--size", type=int, default=768, help="image edge (px)")
    ap.add_argument("--train-times", type=float, nargs="+", default=[0, 5, 20, 120],
                    help="oxidation times (min) of the training images, one image each")
    ap.add_argument("--test-times", type=float, nargs="+", default=[10, 60],
                    help="oxidation times (min) of the held-out images (role predict)")
    ap.add_argument("--targets", choices=["auto", "truth"], default="auto")
    ap.add_argument("--filters", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--test-tiles", type=float, default=140 / 1232)
    ap.add_argument("--budget-min", type=float, default=25.0, help="stop training after this many minutes")
    ap.add_argument("--ignore-boundary", type=float, default=0.0,
                    help="leave target pixels within this many px of another class out of the loss")
    ap.add_argument("--name", default="study", help="model name in the store")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse the store (and its targets) if present")
    ap.add_argument("--score-only", action="store_true",
                    help="with --reuse: score the model already trained in the store, do not train")
    return ap.parse_args()


def make_targets(store: object, ids: list[str], how: str) -> None:
    """``labels/target`` of every image: automatic EDS-guided labels, or (``truth``) the ground truth."""
    if all(store.has_labels(i, "target") for i in ids):
        return
    if how == "auto":
        import dataclasses

        from semscale.config import LabellingConfig
        from semscale.labelling import label_store

        # the forest settings the study's recorded figures were made with (then label_store's defaults)
        cfg = dataclasses.replace(LabellingConfig(), n_estimators=48, max_seeds_per_class=10_000, n_jobs=2)
        label_store(store, ids, cfg, overwrite=True)
        return
    log.warning("STAND-IN: targets are the ground truth (--targets truth); the claim is not tested")
    for i in ids:
        store.write_labels(i, "target", store.labels(i, "truth"), attrs={"method": "truth stand-in"})


def train(store: object, args: argparse.Namespace) -> tuple[dict, float]:
    """The member's sidecar and the training time (s): trained now, or (``--score-only``) as it is."""
    from semscale.config import TrainingConfig
    from semscale.training.fit import train_member

    if args.score_only:
        side = json.loads(store.member_file(args.name, 0, "sidecar").read_text())
        previous = args.out / f"{args.name}_results.json"
        return side, json.loads(previous.read_text())["seconds"]["training"] if previous.exists() else float("nan")
    t_train = time.perf_counter()
    cfg = TrainingConfig(
        name=args.name, patch_size=args.patch, batch_size=args.batch, epochs=args.epochs,
        steps_per_epoch=args.steps, learning_rate=args.lr, filters=tuple(args.filters),
        dropout=tuple([0.1] * len(args.filters)), seed=args.seed, test_tiles_fraction=args.test_tiles,
        ignore_boundary_px=args.ignore_boundary, workers=2,
    )
    side = train_member(store, cfg, member=0, resume=False, callbacks=[TimeBudget(args.budget_min)])
    return side, time.perf_counter() - t_train


def score_images(store: object, model: object, ids: list[str], multiple: int, classes: list[str]) -> dict:
    """Per image: targets, U-Net and U-Net + TTA against the truth, and U-Net against the targets."""
    from semscale.kernels.norm import apply_norm

    rows = {}
    for i in ids:
        truth = store.labels(i, "truth").compute()
        target = store.labels(i, "target").compute()
        image = apply_norm(np.asarray(store.sem_array(i)[...]), store.norm(i))
        t0 = time.perf_counter()
        pred = segment_whole(model, image, multiple)
        pred_tta = segment_whole(model, image, multiple, tta=True)
        rows[i] = {
            "role": store.image_attrs(i).get("role"),
            "target_vs_truth": score(truth, target, classes),
            "unet_vs_truth": score(truth, pred, classes),
            "unet_tta_vs_truth": score(truth, pred_tta, classes),
            "unet_vs_target": score(target, pred, classes),
            "predict_seconds": round(time.perf_counter() - t0, 2),
        }
    return rows


def pooled(rows: dict, role: str, key: str, classes: list[str]) -> dict:
    """Scores of comparison ``key`` over the images of ``role`` (summed confusion matrices)."""
    from semscale.analysis.metrics import scores_from_confusion

    cm = sum(np.array(r[key]["confusion"]) for r in rows.values() if r["role"] == role)
    s = scores_from_confusion(cm, classes=classes)
    return {"accuracy": s["accuracy"], "mean_iou": s["mean_iou"], "iou": {c: s["per_class"][c]["iou"] for c in classes}}


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    from semscale.store import open_store
    from semscale.training.unet import load_model

    if args.reuse and (args.out / "study.zarr" / "zarr.json").exists():
        store = open_store(args.out / "study.zarr")
    else:
        store = build_store(args.out, size=args.size, train_times=args.train_times, test_times=args.test_times,
                            seed=args.seed)
    ids = store.image_ids()
    t_label = time.perf_counter()
    make_targets(store, ids, args.targets)
    label_s = time.perf_counter() - t_label
    classes = list(store.classes)
    side, train_s = train(store, args)
    model, _ = load_model(store.member_file(args.name, 0, "model"))
    rows = score_images(store, model, ids, 2 ** (len(args.filters) - 1), classes)
    summary = {
        "targets": args.targets,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "cpu_cores_visible": __import__("os").cpu_count(),
        "seconds": {"labelling": round(label_s, 1), "training": round(train_s, 1),
                    "total": round(time.perf_counter() - t_all, 1)},
        "epochs_trained": side["epochs_trained"], "best_epoch": side["best_epoch"],
        "val_tiles": {"accuracy_vs_target": side["val_accuracy"], "mean_iou_vs_target": side["val_mean_iou"]},
        "held_out": {k: pooled(rows, "predict", k, classes)
                     for k in ("target_vs_truth", "unet_vs_truth", "unet_tta_vs_truth")},
        "train_images": {k: pooled(rows, "train", k, classes) for k in ("target_vs_truth", "unet_vs_truth")},
        "images": rows,
    }
    (args.out / f"{args.name}_results.json").write_text(json.dumps(summary, indent=2))
    h = summary["held_out"]
    log.info("held-out images: targets vs truth: accuracy %.4f, mean IoU %.4f | U-Net vs truth: accuracy "
             "%.4f, mean IoU %.4f | U-Net + 8-fold TTA: accuracy %.4f, mean IoU %.4f",
             h["target_vs_truth"]["accuracy"], h["target_vs_truth"]["mean_iou"],
             h["unet_vs_truth"]["accuracy"], h["unet_vs_truth"]["mean_iou"],
             h["unet_tta_vs_truth"]["accuracy"], h["unet_tta_vs_truth"]["mean_iou"])
    log.info("times: labelling %.0f s, training %.0f s, total %.0f s", label_s, train_s,
             summary["seconds"]["total"])


if __name__ == "__main__":
    main()
