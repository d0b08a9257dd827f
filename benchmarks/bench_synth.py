"""Time :func:`semscale.synth.simulate` on a full-size SEM frame (2856 × 4096 px) with its EDS maps.

Usage: ``python benchmarks/bench_synth.py [--runs 3] [--shape 2856 4096] [--time 20]``. Prints the
seconds per image (best and median of the runs) and the throughput in Mpx/s. Single-threaded NumPy /
SciPy; on a shared machine look at the best run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from semscale.synth import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=2, default=(2856, 4096), metavar=("H", "W"))
    parser.add_argument("--time", type=float, default=20.0, help="oxidation time, minutes")
    args = parser.parse_args()
    shape = (args.shape[0], args.shape[1])
    mpx = shape[0] * shape[1] / 1e6
    times = []
    for k in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        im = simulate(shape, oxidation_min=args.time, seed=k, with_eds=True)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        times.append(dt)
        print(
            f"run {k}: {dt:6.2f} s wall ({cpu:6.2f} s CPU)  {mpx / dt:5.2f} Mpx/s  "
            f"EDS {im.eds['Ni'].shape}  NiO fraction {im.meta['fractions']['NiO']:.3f}"
        )
    best, med = min(times), statistics.median(times)
    print(
        f"simulate{shape} with EDS: best {best:.2f} s ({mpx / best:.2f} Mpx/s), "
        f"median {med:.2f} s ({mpx / med:.2f} Mpx/s) over {len(times)} runs"
    )


if __name__ == "__main__":
    main()
