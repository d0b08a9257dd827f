"""Run a semscale campaign on SLURM: dask-jobqueue starts the workers, semscale uses them.

    pip install dask-jobqueue
    python deploy/slurm/run_campaign.py campaign.yaml --jobs 4 --gpus-per-job 1 --partition gpu

Each job is one Dask worker with one thread per GPU (TensorFlow/Keras owns the device). The store must be on
a file system shared by the login node and the compute nodes. The scheduler's dashboard listens on the
login node's loopback (``--dashboard``, default 127.0.0.1:8787): reach it with
``ssh -L 8787:127.0.0.1:8787 LOGIN-NODE``. Logs go to stderr; the summary JSON is printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from semscale.runtime.progress import setup_logging  # before dask and TensorFlow are imported

log = logging.getLogger("semscale.deploy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--partition", default=None)
    p.add_argument("--gpus-per-job", type=int, default=1)
    p.add_argument("--cores", type=int, default=8)
    p.add_argument("--memory", default="64GB")
    p.add_argument("--walltime", default="04:00:00")
    p.add_argument("--dashboard", default="127.0.0.1:8787", help="scheduler dashboard address (HOST:PORT)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    args = p.parse_args()
    setup_logging(args.verbose)

    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    from semscale.config import load_config
    from semscale.pipeline import run_campaign

    extra = [f"--gres=gpu:{args.gpus_per_job}"] if args.gpus_per_job else []
    cluster = SLURMCluster(
        queue=args.partition, cores=args.cores, processes=max(1, args.gpus_per_job), memory=args.memory,
        walltime=args.walltime, job_extra_directives=extra,
        worker_extra_args=["--resources", f"GPU={max(1, args.gpus_per_job)}"] if args.gpus_per_job else [],
        scheduler_options={"dashboard_address": args.dashboard},
    )
    cluster.scale(jobs=args.jobs)
    with Client(cluster) as client:
        log.info("Dask dashboard: %s", client.dashboard_link)
        client.wait_for_workers(1)
        summary = run_campaign(load_config(args.config), client=client)
        log.info("done in %.0f s", summary["seconds"])
    cluster.close()
    sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
