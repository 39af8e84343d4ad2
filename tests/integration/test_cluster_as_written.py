"""The cluster as cluster.yaml writes it, on this machine: its own node types (resources as
declared, min / max workers, overall max_workers) become a Ray autoscaling cluster of
`fake_multinode` nodes (helpers_cluster.fake_autoscaling_config), the head with no CPUs.
The README's cluster sequence is submitted to it in order, each job's driver on this machine
as `ray job submit` would run it on the head (its home folder holds the autoscaler config
`ray up` leaves there, `~/ray_bootstrap_config.yaml`, read by train.use_gpu=auto and by the
placement check):

0. a training whose 16 GPU workers must share one node (STRICT_PACK): no node type holds 16
   GPUs, so the job stops before it reads data or opens an MLflow run, and no node is added;
1. `prepare_data` on the generated COCO set: its Ray Data tasks can only run on nodes the
   autoscaler adds, and it adds `cpu_data` nodes only;
2. an 8-worker STRICT_PACK training (use_gpu auto -> GPU workers): the MLflow tag
   `worker_nodes` names one node for all 8 ranks, a `gpu_8x` node;
3. the loss_weight sweep with ASHA, trials of one GPU worker each, all at a time: every
   trial's worker is on a `gpu_1x` node.

After each job the cluster is waited on until only the head is left: every added node is
removed once idle. GPUs are resources only: the fake nodes declare them, Ray assigns them,
and each job's worker processes train on the CPU (helpers_fake_gpu). Shrunk from the
README's commands to fit 2 cores: the tiny preset (train.use_gpu=auto and one CPU per worker,
as the paper presets request) instead of coco_lowres / r50_ablation, 2 steps, batch 8, one
evaluation actor, 2 val images, 2 of the sweep's 4 trials (p = 0 and 0.6, 2 at a time), a
6 s idle timeout instead of 10 minutes.

The second test starts the head's MLflow server as start_mlflow.sh does (the basic-auth app,
scripts/cluster/mlflow_basic_auth.ini, the login node_auth.sh reads) and checks who gets in.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers_cluster import (
    fake_autoscaling_cluster,
    fake_autoscaling_config,
    free_ports,
    node_watch,
    ray_env,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())
IDLE_TIMEOUT_MIN = 0.1
# the README's jobs at the tiny size
SMALL = {
    "train.use_gpu": "auto",
    "train.cpus_per_worker": "1",
    "train.steps": "2",
    "train.checkpoint_every": "2",
    "train.log_every": "1",
    "train.progress_every": "0",
    "sample.steps": "1",
    "eval.max_images": "2",
    "eval.num_actors": "1",
    "eval.periodic_images": "2",
    "eval.overlays": "0",
    "optim.warmup_steps": "1",
}


def _sets(**extra: str) -> list[str]:
    return [x for k, v in {**SMALL, **extra}.items() for x in ("--set", f"{k}={v}")]


def _node_type(resources: dict[str, float]) -> str:
    """The cluster.yaml node type whose declared resources the node has."""
    types = [
        name
        for name, spec in CLUSTER["available_node_types"].items()
        if all(resources.get(k, 0.0) == v for k, v in spec["resources"].items())
        and resources.get("GPU", 0.0) == spec["resources"].get("GPU", 0.0)
    ]
    assert len(types) == 1, (resources, types)
    return types[0]


def _job(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _worker_nodes(client, experiment: str) -> list[list[str]]:
    """The `worker_nodes` tag (node id per rank) of every run of `experiment` that trained."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [json.loads(r.data.tags["worker_nodes"]) for r in runs if "worker_nodes" in r.data.tags]


def _after_scale_down(nodes, known: set[str]) -> dict[str, str]:
    """Waits until only the head is alive; node id -> type of the nodes added since `known`
    (all of them removed again by then)."""
    deadline = time.monotonic() + 240
    while sum(n["alive"] for n in nodes()) != 1:
        assert time.monotonic() < deadline, f"added nodes not removed when idle: {nodes()}"
        time.sleep(1)
    return {n["id"]: _node_type(n["resources"]) for n in nodes() if n["id"] not in known}


@pytest.mark.drill
def test_the_readmes_cluster_sequence_lands_on_the_promised_node_types(mlflow_server, tmp_path):
    import mlflow.tracking

    from pix2seqd.platform.synthetic.coco import make_coco

    data = make_coco(tmp_path / "coco", seed=6, n_train=8, n_val=2, min_size=48, max_size=64)
    config = fake_autoscaling_config(CLUSTER, IDLE_TIMEOUT_MIN)
    home = tmp_path / "home"  # the head's home folder, as `ray up` leaves it
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump(config))
    env = {
        **ray_env(),
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_prestart_worker_first_driver": "0",
        # the fake-GPU hook imports from here in every worker process
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests/unit"), os.environ.get("PYTHONPATH", "")]),
    }
    hook = {"runtime_env": {"worker_process_setup_hook": "helpers_fake_gpu.cpu_in_place_of_gpus"}}
    client = mlflow.tracking.MlflowClient(mlflow_server)
    prepared, storage = tmp_path / "prepared", tmp_path / "ray_results"
    with (
        fake_autoscaling_cluster(config, tmp_path, env) as address,
        node_watch(address, env, tmp_path / "nodes.json") as nodes,
    ):
        job_env = {
            **env,
            "HOME": str(home),
            "RAY_ADDRESS": address,
            "MLFLOW_TRACKING_URI": mlflow_server,
            "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(hook),
        }
        head = _after_scale_down(nodes, set())
        assert list(head.values()) == ["head"]

        # 0. a request no node type holds: refused before anything starts (the data it
        # names does not exist yet)
        too_big = _job(
            [
                "jobs/train_coco.py",
                *("--prepared", str(prepared), "--storage-path", str(storage)),
                *("--experiment", "as-written-refused"),
                *_sets(
                    **{
                        "train.num_workers": "16",
                        "train.batch_size": "16",
                        "train.placement_strategy": "STRICT_PACK",
                    }
                ),
            ],
            job_env,
            timeout=300,
        )
        assert too_big.returncode != 0
        err = too_big.stderr
        assert "train.num_workers=16" in err and "can never be placed" in err, err[-3000:]
        assert "STRICT_PACK needs one node with {CPU: 16, GPU: 16}" in err, err[-3000:]
        assert client.get_experiment_by_name("as-written-refused") is None  # no run opened
        assert _after_scale_down(nodes, set()) == head  # no node was added

        # 1. prepare_data: on cpu_data nodes (the head has no CPU for its tasks)
        prep = _job(
            [
                "jobs/prepare_data.py",
                *("--dataset", "coco", "--data-root", str(data), "--out", str(prepared)),
                *("--rows-per-shard", "4"),
            ],
            job_env,
            timeout=600,
        )
        assert prep.returncode == 0, (prep.stdout + prep.stderr)[-4000:]
        added = _after_scale_down(nodes, set(head))
        assert added and set(added.values()) == {"cpu_data"}, added
        known = set(head) | set(added)

        # 2. 8 workers packed on one 8-GPU node
        train = _job(
            [
                "jobs/train_coco.py",
                *("--prepared", str(prepared), "--storage-path", str(storage)),
                *("--experiment", "as-written-train"),
                *_sets(
                    **{
                        "train.num_workers": "8",
                        "train.batch_size": "8",
                        "train.placement_strategy": "STRICT_PACK",
                    }
                ),
            ],
            job_env,
            timeout=900,
        )
        assert train.returncode == 0, (train.stdout + train.stderr)[-6000:]
        added = _after_scale_down(nodes, known)
        known |= set(added)
        [ranks] = _worker_nodes(client, "as-written-train")
        assert len(ranks) == 8 and len(set(ranks)) == 1, ranks
        assert added[ranks[0]] == "gpu_8x", added

        # 3. the sweep: trials of one GPU worker, all at a time, on 1-GPU nodes
        sweep = _job(
            [
                "sweeps/loss_weight.py",
                *("--prepared", str(prepared), "--storage-path", str(storage)),
                *("--experiment", "as-written-sweep", "--max-concurrent", "2", "--asha"),
                *("--grid", "loss.p=0.0,0.6"),
                *_sets(**{"train.num_workers": "1", "train.batch_size": "2"}),
            ],
            job_env,
            timeout=900,
        )
        assert sweep.returncode == 0, (sweep.stdout + sweep.stderr)[-6000:]
        added = _after_scale_down(nodes, known)
        trials = _worker_nodes(client, "as-written-sweep")
        assert len(trials) == 2 and all(len(t) == 1 for t in trials), trials
        assert {added[t[0]] for t in trials} == {"gpu_1x"}, (trials, added)


def test_the_heads_mlflow_server_asks_for_the_clusters_login(tmp_path, monkeypatch):
    """start_mlflow.sh's basic-auth server, as the head starts it: the login read by
    node_auth.sh from the credentials file becomes the admin; no login, a wrong one, or
    another user without a grant gets nothing."""
    import mlflow.tracking
    from mlflow.server.auth.client import AuthServiceClient

    (tmp_path / ".pix2seqd").mkdir()
    (tmp_path / ".pix2seqd/mlflow_credentials").write_text(
        "MLFLOW_TRACKING_USERNAME=admin\nMLFLOW_TRACKING_PASSWORD=s3cret =x long\n"
    )
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray/auth_token").write_text("0123456789abcdef")
    [port] = free_ports(1)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    # start_mlflow.sh's environment and flags for the auth app, after node_auth.sh
    server = (
        f"source {ROOT}/scripts/cluster/node_auth.sh && cd {tmp_path} && "
        f"MLFLOW_AUTH_CONFIG_PATH={ROOT}/scripts/cluster/mlflow_basic_auth.ini "
        'MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME" '
        'MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD" '
        "MLFLOW_FLASK_SERVER_SECRET_KEY=test-only-key "
        f"exec {mlflow_bin} server --app-name basic-auth "
        f"--backend-store-uri sqlite:///{tmp_path}/mlflow.db "
        f"--artifacts-destination {tmp_path}/artifacts --host 127.0.0.1 --port {port} --workers 1"
    )
    env = {**os.environ, "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        ["bash", "-c", server],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{uri}/health", proc, tmp_path / "server.log")
        search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=5"
        assert _status(search, None) == 401
        assert _status(search, ("admin", "wrong")) == 401
        assert _status(search, ("admin", "s3cret =x long")) == 200

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret =x long")
        admin = mlflow.tracking.MlflowClient(uri)
        exp = admin.create_experiment("as-written-auth")
        run = admin.create_run(exp)
        admin.log_metric(run.info.run_id, "train/loss", 1.5, step=1)
        AuthServiceClient(uri).create_user("viewer", "viewer-password-1")
        url = f"{uri}/api/2.0/mlflow/experiments/get?experiment_id={exp}"
        assert _status(url, ("admin", "s3cret =x long")) == 200
        assert _status(url, ("viewer", "viewer-password-1")) == 403  # NO_PERMISSIONS
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        log.close()


def _status(url: str, login: tuple[str, str] | None) -> int:
    request = urllib.request.Request(url)
    if login:
        token = base64.b64encode(":".join(login).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-3000:]}")
        try:
            if _status(url, None) in (200, 401):
                return
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not up after {timeout} s: {log.read_text()[-3000:]}")
