"""deploy/: the SLURM and Kubernetes cluster definitions are built as their tools build them (nothing is
submitted), and agree with the container recipe."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _slurm_module() -> Any:
    spec = importlib.util.spec_from_file_location("semscale_deploy_slurm", DEPLOY / "slurm" / "run_campaign.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slurm_cluster_is_built_with_one_worker_per_gpu_and_nothing_submitted() -> None:
    slurm = _slurm_module()
    args = slurm.parse_args(["c.yaml", "--partition", "gpu", "--gpus-per-job", "2", "--cores", "16",
                             "--memory", "64GB", "--account", "proj7", "--scheduler-host", "127.0.0.1",
                             "--dashboard", "127.0.0.1:0"])
    cluster = slurm.build_cluster(args)
    try:
        script = cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert len(cluster.workers) == 0  # built, not scaled: no job was submitted
    finally:
        cluster.close()
    for directive in ("-p gpu", "--cpus-per-task=16", "--gres=gpu:2", "--account=proj7", "-t 04:00:00"):
        assert f"#SBATCH {directive}" in script
    worker = next(line for line in script.splitlines() if "dask_worker" in line)
    assert "--nworkers 2" in worker and "--nthreads 1" in worker and "--resources GPU=1" in worker
    assert worker.count("--nthreads") == 1

    cpu = slurm.build_cluster(slurm.parse_args(["c.yaml", "--gpus-per-job", "0", "--cores", "8",
                                                "--scheduler-host", "127.0.0.1", "--dashboard", "127.0.0.1:0"]))
    try:
        script = cpu.job_script()
    finally:
        cpu.close()
    assert "--gres" not in script and "GPU=1" not in script and "--nthreads 8" in script


def test_kubernetes_daskcluster_has_the_operators_shape_and_gpu_workers() -> None:
    from dask_kubernetes.operator import make_cluster_spec

    ours = yaml.safe_load((DEPLOY / "kubernetes" / "daskcluster.yaml").read_text())
    image = ours["spec"]["worker"]["spec"]["containers"][0]["image"]
    made = make_cluster_spec(name="semscale", image=image, n_workers=4,
                             resources={"limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}})
    assert (ours["apiVersion"], ours["kind"]) == (made["apiVersion"], made["kind"])

    def keys(tree: Any, prefix: str = "") -> set[str]:
        if isinstance(tree, dict):
            return {f"{prefix}{k}" for k in tree} | {p for k, v in tree.items() for p in keys(v, f"{prefix}{k}.")}
        if isinstance(tree, list) and tree and isinstance(tree[0], dict):
            return keys(tree[0], prefix + "0.")
        return set()

    required = {k for k in keys(made) if not k.endswith((".env", "idleTimeout"))
                and not (k.startswith("spec.scheduler") and k.endswith("nvidia.com/gpu"))}  # no GPU for it
    assert required - keys(ours) == set()  # every field the operator's own spec sets, ours sets too
    worker = ours["spec"]["worker"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1 and ours["spec"]["worker"]["replicas"] >= 1
    assert worker["args"][0] == "dask-worker" and "GPU=1" in worker["args"] and "1" in worker["args"]
    scheduler = ours["spec"]["scheduler"]
    assert scheduler["spec"]["containers"][0]["image"] == image
    assert {p["port"] for p in scheduler["service"]["ports"]} == {8786, 8787}
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    volumes = {v["name"] for v in ours["spec"]["worker"]["spec"]["volumes"]}
    assert set(mounts) <= volumes and mounts["data"] == "/data"


def test_container_recipe_runs_what_the_cluster_definitions_ask_for() -> None:
    recipe = (DEPLOY / "container" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:12[\w.\-]*cudnn", recipe, re.M)
    assert 'pip install ".[gpu,deploy]"' in recipe
    # Kubernetes `args: [dask-worker, ...]` replace the image's CMD; an ENTRYPOINT would be prepended to them
    assert not re.search(r"^ENTRYPOINT", recipe, re.M)
    for line in re.findall(r"^COPY (\S+)", recipe, re.M):  # what it copies exists in the repository
        for name in line.split():
            assert (DEPLOY.parent / name).exists(), name
    readme = (DEPLOY / "README.md").read_text()
    assert "deploy/container/Dockerfile" in readme and "docker build" in readme
