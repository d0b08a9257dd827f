"""Make the shipped pretrained weights (``training.init_weights: synthetic``).

Usage::

    python scripts/pretrain_synthetic.py [--images 96] [--size 512] [--seed 0] [--budget-min 30]
        [--out semscale/weights/synthetic-cpu.keras] [--workdir DIR]

Simulates ``--images`` domain-randomised images (:mod:`semscale.synth.randomise`: each its own simulator
setting and oxidation time; the evaluation-only settings are outside every range), and trains the ``cpu``
recipe's U-Net on their exact truth for ``--budget-min`` minutes (:mod:`semscale.training.pretrain`). The
result (``.keras`` + ``.json`` sidecar recording how it was made) is what the package ships; rerun this to
reproduce it (the simulator and the sampler are seeded; the epochs a time budget allows vary with the
machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from semscale.config import TrainingConfig
    from semscale.training.pretrain import pretrain_synthetic

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--size", type=int, default=512, help="image edge (px)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-min", type=float, default=30.0, help="training budget (min)")
    p.add_argument("--out", type=Path,
                   default=Path(__file__).resolve().parent.parent / "semscale" / "weights" / "synthetic-cpu.keras")
    p.add_argument("--workdir", type=Path, help="keep the simulated store here (default: a temporary folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    cfg = TrainingConfig.from_recipe("cpu", name="synthetic", budget_min=args.budget_min, seed=args.seed)
    if args.workdir is not None:
        pretrain_synthetic(args.out, cfg, workdir=args.workdir, n_images=args.images, size=args.size,
                           seed=args.seed)
    else:
        with tempfile.TemporaryDirectory(prefix="semscale-pretrain-") as tmp:
            pretrain_synthetic(args.out, cfg, workdir=Path(tmp), n_images=args.images, size=args.size,
                               seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
