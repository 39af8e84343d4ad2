"""Losing the node a training worker runs on, on a local multi-raylet cluster
(`ray.cluster_utils.Cluster`: a head that runs no tasks, as in cluster.yaml, and two
3-CPU worker nodes; checkpoints in a local folder all the fake nodes share):

* the node is removed in the middle of a run: the worker group restarts on the remaining
  node from the latest checkpoint and the run finishes, the step counter continuing;
* the node is drained for preemption (what a spot interruption notice becomes,
  `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` with a deadline): with
  `train.preemption_watcher` on (the default) the loop writes a checkpoint on the notice;
  at the deadline Ray Train restarts the worker group on the other node from that
  checkpoint, a restart it does not count against `train.max_failures` (0 here); then the
  drained node is removed.

The training job runs as its own process (`jobs/train_coco.py`), as under `ray job submit`.
Both tests start their own Ray processes (marker `cluster`) and stop exactly those."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers_cluster import LOCAL_OBJECT_STORE, local_cluster, ray_env
from helpers_jobs import SMALL_RUN_SETS
from helpers_restarts import find_run, registered

from pix2seqd.platform.ray_env import PREEMPTION_WATCHER_ENV

pytestmark = [pytest.mark.cluster, pytest.mark.drill, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
NODE = {"num_cpus": 3, "object_store_memory": LOCAL_OBJECT_STORE}
BASE = [*SMALL_RUN_SETS, "train.log_every=1", "train.progress_every=0", "eval.every_steps=0"]


@pytest.fixture(scope="module")
def cluster():
    with local_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    from pix2seqd.platform.synthetic.coco import make_coco

    return make_coco(tmp_path_factory.mktemp("nodes") / "coco", 4, 12, 2, 48, 64)


def _two_worker_nodes(cluster) -> None:
    """Two live worker nodes (a test before may have removed one)."""
    while len(cluster.worker_nodes) < 2:
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()


def _start_job(cluster, mlflow_server, data, storage: Path, name: str, sets, log: Path, env=()):
    args = ["--data-root", str(data), "--storage-path", str(storage), "--run-name", name]
    args += [x for s in BASE + sets for x in ("--set", s)]
    # the config key decides on Ray Train's preemption watcher here (conftest turns it off)
    base = {k: v for k, v in ray_env().items() if k != PREEMPTION_WATCHER_ENV}
    env = {
        **base,
        "RAY_ADDRESS": cluster.address,
        "MLFLOW_TRACKING_URI": mlflow_server,
        **dict(env),
    }
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "jobs/train_coco.py", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _when(proc: subprocess.Popen, ready: Callable, what: str, log: Path):
    """ready()'s first truthy value, polled while the job runs."""
    while proc.poll() is None:
        value = ready()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"the job ended before {what}: {log.read_text()[-4000:]}")


def _tags(mlc, run_id: str) -> dict[str, str]:
    return mlc.get_run(run_id).data.tags


def _steps_tagged(tags: dict[str, str]) -> list[int]:
    return sorted(int(k.split("/")[1]) for k in tags if k.startswith("checkpoint/"))


def _worker_node(cluster, node_id: str):
    [node] = [n for n in cluster.worker_nodes if n.node_id == node_id]
    return node


def _finished(proc: subprocess.Popen, log: Path) -> None:
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-6000:]


def _losses(mlc, run_id: str) -> list[int]:
    return sorted({m.step for m in mlc.get_metric_history(run_id, "train/loss")})


def test_fault_node_loss(cluster, mlflow_server, coco, tmp_path):
    import mlflow.tracking

    _two_worker_nodes(cluster)
    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    steps, every, log = 40, 8, tmp_path / "job.log"
    storage = tmp_path / "storage"
    sets = [f"train.steps={steps}", f"train.checkpoint_every={every}", "train.max_failures=2"]
    proc = _start_job(cluster, mlflow_server, coco, storage, "node-loss", sets, log)
    try:
        run_id = _when(proc, lambda: find_run(mlc, "node-loss"), "the run started", log).info.run_id
        kept = _when(proc, lambda: registered(storage, run_id), "a checkpoint", log)
        lost = json.loads(_tags(mlc, run_id)["worker_nodes"])[-1]
        cluster.remove_node(_worker_node(cluster, lost))
        _finished(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    restarts = [m.value for m in mlc.get_metric_history(run_id, "train/restored_from")]
    first = int(kept[0].removeprefix("checkpoint_"))
    assert len(restarts) == 1 and restarts[0] >= first and restarts[0] % every == 0, restarts
    assert _losses(mlc, run_id) == list(range(1, steps + 1))  # the steps went on to the end
    tags = _tags(mlc, run_id)
    assert max(_steps_tagged(tags)) == steps
    assert lost not in json.loads(tags["worker_nodes"])  # the restart ran elsewhere
    assert mlc.get_run(run_id).info.status == "FINISHED"


def test_fault_preemption_notice_checkpoints_and_restarts_uncounted(
    cluster, mlflow_server, coco, tmp_path
):
    import mlflow.tracking

    _two_worker_nodes(cluster)
    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    steps, log, storage = 80, tmp_path / "job.log", tmp_path / "storage"
    sets = [
        f"train.steps={steps}",
        "train.checkpoint_every=1000",  # no periodic checkpoint: only the notice's
        "train.max_failures=0",  # a restart counted as a failure would end the run
    ]
    env = {"RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "0.5"}
    proc = _start_job(cluster, mlflow_server, coco, storage, "preempted", sets, log, env)
    try:
        run_id = _when(proc, lambda: find_run(mlc, "preempted"), "the run started", log).info.run_id
        _when(proc, lambda: mlc.get_metric_history(run_id, "train/loss"), "a step", log)
        drained = json.loads(_tags(mlc, run_id)["worker_nodes"])[-1]
        _drain_for_preemption(cluster, drained, deadline_s=600)
        # the notice's checkpoint, registered by Ray Train: the restart's starting point
        [name] = _when(proc, lambda: registered(storage, run_id), "a checkpoint", log)
        # the deadline brought forward (a drain again): Ray Train restarts the worker
        # group then, on the other node, rather than ten minutes later
        _drain_for_preemption(cluster, drained, deadline_s=1)
        _when(proc, lambda: mlc.get_metric_history(run_id, "train/restored_from"), "a restart", log)
        cluster.remove_node(_worker_node(cluster, drained))  # the spot instance goes
        _finished(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = int(name.removeprefix("checkpoint_"))
    [notice] = mlc.get_metric_history(run_id, "train/preemption_notice")
    assert notice.step == saved > 0 and 500 < notice.value <= 600
    restarts = [m.value for m in mlc.get_metric_history(run_id, "train/restored_from")]
    assert restarts == [saved]  # from the notice's checkpoint, not from step 0
    assert _losses(mlc, run_id) == list(range(1, steps + 1))
    assert mlc.get_run(run_id).info.status == "FINISHED"  # with no failure allowed
    assert drained not in json.loads(_tags(mlc, run_id)["worker_nodes"])


def _drain_for_preemption(cluster, node_id: str, deadline_s: int) -> None:
    """What a spot-interruption handler on the node runs (docs/resilience.md)."""
    drain = subprocess.run(
        [
            str(Path(sys.executable).with_name("ray")),
            "drain-node",
            "--address",
            cluster.address,
            "--node-id",
            node_id,
            "--reason",
            "DRAIN_NODE_REASON_PREEMPTION",
            "--reason-message",
            "spot interruption notice",
            "--deadline-remaining-seconds",
            str(deadline_s),
        ],
        env=ray_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert drain.returncode == 0, drain.stderr
