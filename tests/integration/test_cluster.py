"""Multi-node behaviour, locally, without a cloud account:

* Ray's `fake_multinode` autoscaler, with fake GPU worker types named as in cluster.yaml:
  work that needs more GPUs than the cluster has makes it add worker nodes, which it
  removes again once they are idle;
* `ray.cluster_utils.Cluster`: a 2-worker training job (train_coco, DDP) whose workers run
  on two separate raylets (STRICT_SPREAD), a head that runs no tasks (CPU 0, as in
  cluster.yaml), one MLflow server; the run records which node each rank ran on.

Both start their own Ray processes (marker `cluster`) and stop exactly those."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers_cluster import (
    LOCAL_OBJECT_STORE,
    fake_autoscaling_cluster,
    fake_autoscaling_config,
    local_cluster,
    ray_env,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


# cluster.yaml's shape with its worker type names, on fake 1-CPU nodes
# (helpers_cluster.fake_autoscaling_config makes Ray's fake_multinode config of it)
SMALL_CLUSTER = {
    "cluster_name": "pix2seqd",
    "max_workers": 3,
    "upscaling_speed": 1.0,
    "head_node_type": "head",
    "available_node_types": {
        "head": {"resources": {"CPU": 1}, "max_workers": 0},
        "gpu_1x": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 2},
        "cpu_data": {"resources": {"CPU": 1}, "min_workers": 0, "max_workers": 1},
    },
}
IDLE_TIMEOUT_MIN = 0.1


# Two tasks of 1 GPU each on a cluster with none: the autoscaler must add GPU nodes. Then,
# idle, they must go. Prints one JSON line.
DRIVER = textwrap.dedent("""
    import json, sys, time, ray
    ray.init(address=sys.argv[1])
    alive = lambda: [n for n in ray.nodes() if n["Alive"]]
    head = ray.get_runtime_context().get_node_id()

    @ray.remote(num_gpus=1, num_cpus=1)
    def work():
        time.sleep(4)
        return ray.get_runtime_context().get_node_id()

    refs = [work.remote() for _ in range(2)]
    peak_gpus, peak_nodes = 0, 1
    while True:
        ready, _ = ray.wait(refs, num_returns=2, timeout=0.5)
        peak_gpus = max(peak_gpus, ray.cluster_resources().get("GPU", 0))
        peak_nodes = max(peak_nodes, len(alive()))
        if len(ready) == 2:
            break
    ran_on = ray.get(refs)
    deadline = time.time() + 120
    while len(alive()) > 1 and time.time() < deadline:
        time.sleep(1)
    seen = {"peak_gpus": peak_gpus, "peak_nodes": peak_nodes, "head": head, "ran_on": ran_on,
            "nodes_after": len(alive()), "gpus_after": ray.cluster_resources().get("GPU", 0)}
    print("RESULT " + json.dumps(seen))
""")


def test_fake_autoscaler_adds_gpu_workers_and_removes_them_when_idle(tmp_path):
    config = fake_autoscaling_config(SMALL_CLUSTER, IDLE_TIMEOUT_MIN)
    env = {**ray_env(), "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    with fake_autoscaling_cluster(config, tmp_path, env) as address:
        run = subprocess.run(
            [sys.executable, "-c", DRIVER, address],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    log = (tmp_path / "ray_start.log").read_text()
    assert run.returncode == 0, run.stderr[-4000:] + log[-2000:]
    # Ray also prints autoscaler events to the driver's stdout, after the result too
    result = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert result, run.stdout[-2000:]
    seen = json.loads(result[-1][len("RESULT ") :])
    assert seen["peak_gpus"] >= 2 and seen["peak_nodes"] >= 2  # GPU workers were added
    assert seen["head"] not in seen["ran_on"]  # the work ran on them
    assert seen["nodes_after"] == 1 and seen["gpus_after"] == 0  # and they went when idle


def test_two_worker_training_spreads_over_two_raylets(mlflow_server, tmp_path):
    import mlflow.tracking

    from pix2seqd.platform.synthetic.coco import make_coco

    data = make_coco(tmp_path / "coco", seed=4, n_train=12, n_val=3, min_size=48, max_size=64)
    with local_cluster() as cluster:
        node = {"num_cpus": 2, "object_store_memory": LOCAL_OBJECT_STORE}
        nodes = [cluster.add_node(**node) for _ in range(2)]
        cluster.wait_for_nodes()
        sets = [
            "train.steps=4",
            "train.batch_size=4",
            "train.checkpoint_every=2",
            "train.log_every=1",
            "train.placement_strategy=STRICT_SPREAD",
            "sample.steps=1",
            "eval.max_images=3",
            "eval.overlays=0",
            "data.image_size=32",
            "optim.warmup_steps=1",
        ]
        summary_path = tmp_path / "summary.json"
        args = [
            "--data-root",
            str(data),
            "--storage-path",
            str(tmp_path / "storage"),
            "--summary-json",
            str(summary_path),
        ] + [x for s in sets for x in ("--set", s)]
        env = {**ray_env(), "RAY_ADDRESS": cluster.address, "MLFLOW_TRACKING_URI": mlflow_server}
        run = subprocess.run(
            [sys.executable, "jobs/train_coco.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=480,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
        summary = json.loads(summary_path.read_text())
        tags = (
            mlflow.tracking.MlflowClient(mlflow_server).get_run(summary["mlflow_run_id"]).data.tags
        )
        ranks = json.loads(tags["worker_nodes"])  # node id per rank, recorded by rank 0
        assert len(ranks) == 2 and len(set(ranks)) == 2
        assert set(ranks) == {n.node_id for n in nodes}  # the two raylets, not the head
