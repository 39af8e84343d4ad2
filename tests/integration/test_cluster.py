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
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers_cluster import free_ports, ray_env, stop_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def _fake_config(gcs_port: int) -> dict:
    """cluster.yaml's worker types, with fake 1-CPU nodes (Ray's fake_multinode provider)."""
    worker = {"node_config": {}, "min_workers": 0}
    return {
        "cluster_name": "pix2seqd-fake",
        "max_workers": 3,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "available_node_types": {
            "head": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_1x": {
                **worker,
                "max_workers": 2,
                "resources": {"CPU": 1, "GPU": 1, "object_store_memory": 200_000_000},
            },
            "cpu_data": {
                **worker,
                "max_workers": 1,
                "resources": {"CPU": 1, "object_store_memory": 200_000_000},
            },
        },
        "head_node_type": "head",
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


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
    gcs, dash, client, agent = free_ports(4)
    config = tmp_path / "fake_cluster.yaml"
    config.write_text(yaml.safe_dump(_fake_config(gcs)))
    env = {**ray_env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    ray_tmp = Path(tempfile.mkdtemp(prefix="p2sd-fake-", dir="/tmp"))  # socket paths < 108 bytes
    log = tmp_path / "ray_start.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("ray")),
                "start",
                "--head",
                "--block",
                "--port",
                str(gcs),
                "--dashboard-port",
                str(dash),
                "--ray-client-server-port",
                str(client),
                "--dashboard-agent-listen-port",
                str(agent),
                "--num-cpus",
                "1",
                "--autoscaling-config",
                str(config),
                "--temp-dir",
                str(ray_tmp),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    survivors: set[int] = set()
    try:
        run = subprocess.run(
            [sys.executable, "-c", DRIVER, f"127.0.0.1:{gcs}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-4000:] + log.read_text()[-2000:]
        # Ray also prints autoscaler events to the driver's stdout, after the result too
        result = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        assert result, run.stdout[-2000:]
        seen = json.loads(result[-1][len("RESULT ") :])
        assert seen["peak_gpus"] >= 2 and seen["peak_nodes"] >= 2  # GPU workers were added
        assert seen["head"] not in seen["ran_on"]  # the work ran on them
        assert seen["nodes_after"] == 1 and seen["gpus_after"] == 0  # and they went when idle
    finally:
        survivors = stop_cluster(head.pid)
        head.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not survivors, f"Ray processes left running: {sorted(survivors)}"


def test_two_worker_training_spreads_over_two_raylets(mlflow_server, tmp_path):
    import mlflow.tracking
    from ray.cluster_utils import Cluster

    from pix2seqd.platform.synthetic.coco import make_coco

    data = make_coco(tmp_path / "coco", seed=4, n_train=12, n_val=3, min_size=48, max_size=64)
    ray_tmp = Path(tempfile.mkdtemp(prefix="p2sd-cl-", dir="/tmp"))
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "object_store_memory": 200 * 2**20,
            "temp_dir": str(ray_tmp),
        },
    )
    try:
        nodes = [cluster.add_node(num_cpus=2, object_store_memory=200 * 2**20) for _ in range(2)]
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
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
