"""Training steps/s on a CPU: XLA compilation and mixed precision, on the ``cpu`` recipe's U-Net.

Usage::

    python benchmarks/bench_steps.py [--recipe cpu] [--steps 20] [--repeats 3] [--json out.json]

Builds the recipe's network (filters, patch and batch of ``TrainingConfig.from_recipe(recipe)``) and times
``train_on_batch`` on one fixed batch (the model alone: the sampler delivers windows several times faster,
see ``bench_train.py``) for each variant — float32 without XLA (Keras' ``jit_compile="auto"`` on a CPU),
float32 with XLA, and ``mixed_bfloat16`` without XLA. The variants alternate ``--repeats`` times in one
process so they share the machine's load; the figure is the median steps/s, with the ratio to the first.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = (("float32", False), ("float32", True), ("mixed_bfloat16", False))
"""(dtype policy, jit_compile)."""


def build(cfg: Any, policy: str, jit: bool) -> Any:
    import keras

    from semscale import IGNORE_LABEL
    from semscale.training.unet import build_unet

    old = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(policy)
    try:
        model = build_unet(n_classes=4, filters=cfg.filters, dropout=cfg.dropout, seed=0)
    finally:
        keras.config.set_dtype_policy(old)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=IGNORE_LABEL), jit_compile=jit)
    return model


def main(argv: list[str] | None = None) -> int:
    import keras

    from semscale.config import TrainingConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    cfg = TrainingConfig.from_recipe(args.recipe)
    rng = np.random.default_rng(0)
    x = rng.random((cfg.batch_size, cfg.patch_size, cfg.patch_size, 1), dtype=np.float32)
    y = rng.integers(0, 4, (cfg.batch_size, cfg.patch_size, cfg.patch_size)).astype(np.int32)
    models = {v: build(cfg, *v) for v in VARIANTS}
    for model in models.values():  # trace / compile before timing
        for _ in range(3):
            model.train_on_batch(x, y)
    rates: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for v, model in models.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            rates[v].append(args.steps / (time.perf_counter() - t0))
    base = statistics.median(rates[VARIANTS[0]])
    rows = [{"policy": pol, "jit_compile": jit, "steps_per_s": statistics.median(r), "ratio": statistics.median(r) / base,
             "runs": r} for (pol, jit), r in rates.items()]
    print(f"recipe {args.recipe}: filters {list(cfg.filters)}, {cfg.patch_size}² px, batch {cfg.batch_size}; "
          f"keras {keras.__version__} ({keras.backend.backend()}), {platform.processor() or platform.machine()}")
    print("| policy | XLA | steps/s | ratio |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['policy']} | {'on' if r['jit_compile'] else 'off'} | {r['steps_per_s']:.2f} | {r['ratio']:.2f} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"recipe": args.recipe, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
