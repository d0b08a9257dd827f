"""Where a trained member's NiO error comes from: the campaign's targets, or the look of its images?

Usage::

    python benchmarks/domain_check.py MEMBER.keras --setting fine-slow [--levels STORE] [--times 5 20 30]
        [--images 3] [--size 512] [--pixel-size 0.04458] [--seed 7]

Simulates, at each oxidation time, ``--images`` images of the evaluation setting and as many drawn from the
training's own randomised distribution (``semscale.synth.randomise.random_params``, centred on the phase
levels the member's sidecar records, or on ``--levels``' campaign), segments them with the member (exact
truth, no target involved) and prints the signed NiO-fraction error (points) and the accuracy of each. Then,
on the evaluation setting, it puts back the calibration's value of one group of simulator fields at a time
(grain sizes, oxidation τ, PSF, noise): the error that goes away with a group is what that group of the
setting's look costs. A member that counts NiO right on its own randomised images but not on the setting's
has learnt the look, not the targets' mistakes. Results as a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

GROUPS = {
    "grain and agglomerate sizes": ("grain_d_um", "agglomerate_um"),
    "oxidation τ": ("ox_tau_min",),
    "PSF": ("psf_sigma_px",),
    "noise": ("noise_gain", "noise_read"),
}
"""Simulator fields put back to the calibration's values together, one group at a time."""


def score(member: str, params: Any, *, time_min: float, seed: int, size: int, pixel_size_um: float
          ) -> tuple[float, float]:
    """``(signed NiO error in points, accuracy in %)`` of ``member`` on one simulated image."""
    from semscale.inference.memory import segment_array
    from semscale.synth import simulate

    sim = simulate((size, size), oxidation_min=time_min, seed=seed, with_eds=False, params=params,
                   pixel_size_um=pixel_size_um)
    labels = segment_array(sim.sem, models=[member])["labels"]  # normalised as ingest would (norm_for_array)
    return 100 * float((labels == 1).mean() - (sim.truth == 1).mean()), 100 * float((labels == sim.truth).mean())


def member_levels(member: str, store: str | None) -> Any:
    """The phase levels the member's synthetic windows were centred on (its sidecar), or ``store``'s."""
    if store is not None:
        from semscale.store import open_store
        from semscale.training.synthetic import campaign_levels

        s = open_store(store, mode="r")
        return campaign_levels(s, [i for i in s.image_ids() if s.has_labels(i, "target")], label_source="target")
    sidecar = json.loads(Path(member).with_suffix(".json").read_text())
    levels = sidecar.get("sampler", {}).get("synthetic_levels")
    if levels is None:
        raise SystemExit(f"{member}: its sidecar records no synthetic levels; pass --levels STORE")
    return tuple(levels["base"]), tuple(levels["grain_sd"])


def main(argv: Sequence[str] | None = None) -> int:
    from semscale.synth.evaluation import EVALUATION_SETTINGS, evaluation_params
    from semscale.synth.params import DEFAULT_PARAMS
    from semscale.synth.randomise import random_params

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("member", help="a trained member (.keras) with its sidecar (.json) beside it")
    p.add_argument("--setting", required=True, choices=sorted(EVALUATION_SETTINGS))
    p.add_argument("--levels", help="centre the randomised draws on this store's targets instead of the sidecar's")
    p.add_argument("--times", type=float, nargs="+", default=[5.0, 20.0, 30.0])
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--pixel-size", type=float, default=0.04458)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)

    setting = evaluation_params(args.setting)
    levels = member_levels(args.member, args.levels)
    rng = np.random.default_rng(args.seed)
    kw: dict[str, Any] = {"size": args.size, "pixel_size_um": args.pixel_size}

    def mean(rows: list[tuple[float, float]]) -> str:
        err, acc = np.mean(rows, axis=0)
        return f"{err:+.2f} pt · {acc:.2f} %"

    print(f"member {args.member}, setting `{args.setting}`, {args.images} images of {args.size}² px per time\n")
    print("| time (min) | randomised draws (training's own): NiO err · acc | the setting: NiO err · acc |")
    print("|---|---|---|")
    for t in args.times:
        own = [score(args.member, random_params(rng, levels=levels), time_min=t, seed=1000 + k, **kw)
               for k in range(args.images)]
        theirs = [score(args.member, setting, time_min=t, seed=2000 + k, **kw) for k in range(args.images)]
        print(f"| {t:g} | {mean(own)} | {mean(theirs)} |", flush=True)
    print("\n| the setting, with the calibration's | NiO err · acc (all times pooled) |")
    print("|---|---|")
    for name, fields in {"nothing": (), **GROUPS}.items():
        params = dataclasses.replace(setting, **{f: getattr(DEFAULT_PARAMS, f) for f in fields})
        rows = [score(args.member, params, time_min=t, seed=3000 + k, **kw) for t in args.times
                for k in range(args.images)]
        print(f"| {name} | {mean(rows)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
