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
from typing import Any

from semscale.runtime.progress import setup_logging  # before dask and TensorFlow are imported

log = logging.getLogger("semscale.deploy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--partition", default=None)
    p.add_argument("--gpus-per-job", type=int, default=1)
    p.add_argument("--cores", type=int, default=8)
    p.add_argument("--memory", default="64GB")
    p.add_argument("--walltime", default="04:00:00")
    p.add_argument("--account", default=None, help="SLURM account to charge (-A)")
    p.add_argument("--scheduler-host", default=None,
                   help="address the scheduler listens on (default: dask-jobqueue's, the node's network address)")
    p.add_argument("--dashboard", default="127.0.0.1:8787", help="scheduler dashboard address (HOST:PORT)")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p.parse_args(argv)


def build_cluster(args: argparse.Namespace) -> Any:
    """The SLURMCluster the options describe: one Dask worker process per GPU of each job, one thread each,
    with a ``GPU`` resource; nothing is submitted until ``cluster.scale``."""
    from dask_jobqueue import SLURMCluster

    extra = [f"--gres=gpu:{args.gpus_per_job}"] if args.gpus_per_job else []
    if args.account:
        extra.append(f"--account={args.account}")
    scheduler: dict[str, Any] = {"dashboard_address": args.dashboard}
    if args.scheduler_host:
        scheduler["host"] = args.scheduler_host
    gpu = args.gpus_per_job > 0
    workers = max(1, args.gpus_per_job)
    return SLURMCluster(  # GPU jobs: Dask threads = workers (one each), the job still gets all its CPUs
        queue=args.partition, cores=workers if gpu else args.cores, job_cpu=args.cores, processes=workers,
        memory=args.memory, walltime=args.walltime, job_extra_directives=extra,
        worker_extra_args=["--resources", "GPU=1"] if gpu else [], scheduler_options=scheduler,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.verbose)

    from dask.distributed import Client

    from semscale.config import load_config
    from semscale.pipeline import run_campaign

    cluster = build_cluster(args)
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
