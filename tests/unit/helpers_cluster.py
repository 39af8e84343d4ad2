"""Processes of Ray clusters that a test starts itself (`ray start`, the fake autoscaler,
`ray.cluster_utils.Cluster`) and of the servers beside them: their environment, free ports,
waiting until they serve, and stopping exactly them, by process id.

Not `ray stop --force`: that kills every Ray process on the machine, other test runs' included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from ray.cluster_utils import Cluster


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_env() -> dict[str, str]:
    """The environment of `ray start` and the `ray job` clients: no token auth, the venv's
    `python` first on PATH (the entrypoint's `python`), nothing that points elsewhere."""
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def wait_until_serving(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until `url` answers 200; fails with the tail of `proc`'s `log` if `proc` exits first or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            name = Path(proc.args[0]).name
            raise RuntimeError(f"{name} exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:  # not listening yet
            time.sleep(0.5)
    raise RuntimeError(f"{url} not serving after {timeout} s: {log.read_text()[-3000:]}")


# ----- processes: the ones this test started, found by id, and nothing else ---------------


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, state) of every process, from /proc."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(d.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return out


def _ours(root_pid: int, sessions: set[int]) -> set[int]:
    """Live processes in `sessions` or descended from `root_pid` (a job's driver has a session
    of its own but descends from the cluster while its supervisor lives)."""
    table = _procs()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        if pid in table and pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    found |= {pid for pid, (_, sid, _) in table.items() if sid in sessions}
    return {pid for pid in found if table.get(pid, (0, 0, "Z"))[2] != "Z"}


def stop_cluster(root_pid: int) -> set[int]:
    """SIGKILL (what `ray stop --force` sends) to every process of this cluster; returns the
    survivors."""
    sessions = {root_pid}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = _ours(root_pid, sessions)
        if not pids:
            return set()
        table = _procs()
        sessions |= {table[p][1] for p in pids if p in table}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    return _ours(root_pid, sessions)


# ----- cluster.yaml's node types as Ray's fake multi-node autoscaling cluster -----------------

# each fake node is a raylet on this machine: a small object store each, not 30 % of the RAM
FAKE_OBJECT_STORE = 100 * 2**20
FAKE_HEAD_TYPE = "ray.head.default"
_NO_COMMANDS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


def fake_autoscaling_config(cluster: dict, idle_timeout_minutes: float) -> dict:
    """`cluster` (cluster.yaml) for Ray's fake_multinode provider: its node types with their
    resources as declared (CPU, GPU, memory, custom ones) and min / max workers, its overall
    max_workers and upscaling speed; `idle_timeout_minutes` replaces its own (minutes of
    waiting in a test)."""
    types = {}
    for name, spec in cluster["available_node_types"].items():
        types[name] = {
            "resources": {**spec["resources"], "object_store_memory": FAKE_OBJECT_STORE},
            "node_config": {},
            "min_workers": spec.get("min_workers", 0),
            "max_workers": spec.get("max_workers", 0),
        }
    # the fake provider tags its head node with this type; under another name the autoscaler
    # would launch a second "head"
    types[FAKE_HEAD_TYPE] = {**types.pop(cluster["head_node_type"]), "max_workers": 0}
    return {
        "cluster_name": f"{cluster['cluster_name']}-fake",
        "max_workers": cluster["max_workers"],
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": types,
        "head_node_type": FAKE_HEAD_TYPE,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        **{key: [] for key in _NO_COMMANDS},
    }


@contextlib.contextmanager
def fake_autoscaling_cluster(config: dict, workdir: Path, env: dict[str, str]) -> Iterator[str]:
    """`ray start --head` with `config` as its autoscaler, the head with the resources of the
    config's head type; yields the GCS address. Stops exactly its processes afterwards and
    fails the test if any survive."""
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    custom = {k: v for k, v in head.items() if k not in ("CPU", "GPU", "object_store_memory")}
    gcs, dash, client, agent = free_ports(4)
    config = {**config, "provider": {**config["provider"], "gcs_address": f"127.0.0.1:{gcs}"}}
    config_file = workdir / "fake_cluster.yaml"
    config_file.write_text(yaml.safe_dump(config))
    ray_tmp = Path(tempfile.mkdtemp(prefix="p2sd-fk-", dir="/tmp"))  # socket paths < 108 bytes
    args = [
        *("--port", str(gcs), "--dashboard-port", str(dash)),
        *("--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent)),
        *("--num-cpus", str(int(head.get("CPU", 0))), "--num-gpus", str(int(head.get("GPU", 0)))),
        *("--object-store-memory", str(FAKE_OBJECT_STORE), "--resources", json.dumps(custom)),
        *("--autoscaling-config", str(config_file), "--temp-dir", str(ray_tmp)),
    ]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    with open(workdir / "ray_start.log", "w") as log:
        proc = subprocess.Popen(
            [ray_bin, "start", "--head", "--block", *args],
            env={**env, "RAY_FAKE_CLUSTER": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    survivors: set[int] = set()
    try:
        _wait_for_head(proc, gcs, workdir / "ray_start.log")
        cluster_nodes(f"127.0.0.1:{gcs}", env, alive=1, wait_s=60)
        yield f"127.0.0.1:{gcs}"
    finally:
        survivors = stop_cluster(proc.pid)
        proc.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not survivors, f"Ray processes left running: {sorted(survivors)}"


def _wait_for_head(proc: subprocess.Popen, gcs_port: int, log: Path, timeout: float = 300) -> None:
    """Until the head's GCS port answers; fails with `ray start`'s output if it exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", gcs_port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"Ray head not up after {timeout} s: {log.read_text()[-3000:]}")


# Connects to the cluster at argv[1] (retrying while its head starts), waits (up to argv[3] s)
# until argv[2] nodes are alive (-1: no wait), prints every node the cluster has had: id,
# alive, resources.
NODES_PROBE = """
import json, sys, time, ray
want, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
while True:
    try:
        ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
        break
    except ConnectionError:
        if time.time() > deadline + 120:
            raise
        time.sleep(2)
while want >= 0 and sum(n["Alive"] for n in ray.nodes()) != want and time.time() < deadline:
    time.sleep(1)
nodes = [{"id": n["NodeID"], "alive": n["Alive"], "resources": n["Resources"]} for n in ray.nodes()]
print("NODES " + json.dumps(nodes))
"""


def cluster_nodes(address: str, env: dict[str, str], alive: int = -1, wait_s: float = 0) -> list:
    """Every node of the cluster at `address` so far (after waiting for `alive` alive
    ones, when >= 0)."""
    run = subprocess.run(
        [sys.executable, "-c", NODES_PROBE, address, str(alive), str(wait_s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=wait_s + 300,
    )
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("NODES ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("NODES ") :])


# Connects to the cluster at argv[1] and keeps argv[2] up to date (JSON, rewritten whole):
# every node seen so far, its resources as last seen alive (Ray drops a dead node's), alive.
NODES_WATCH = """
import json, os, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
seen = {}
while True:
    for n in ray.nodes():
        node = seen.setdefault(n["NodeID"], {"id": n["NodeID"], "resources": {}})
        node["alive"] = n["Alive"]
        if n["Alive"]:
            node["resources"] = n["Resources"]
    with open(sys.argv[2] + ".new", "w") as f:
        json.dump(list(seen.values()), f)
    os.replace(sys.argv[2] + ".new", sys.argv[2])
    time.sleep(0.5)
"""


@contextlib.contextmanager
def node_watch(address: str, env: dict[str, str], path: Path) -> Iterator[Callable[[], list]]:
    """Watches the nodes of the cluster at `address` while the block runs; yields a function
    returning them (dicts: id, alive, resources as last seen alive)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", NODES_WATCH, address, str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def nodes() -> list:
        assert proc.poll() is None, "the node watcher stopped"
        return json.loads(path.read_text()) if path.exists() else []

    try:
        yield nodes
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# ----- ray.cluster_utils.Cluster: several raylets on this machine, one Ray cluster ----------

# each raylet's object store, head included
LOCAL_OBJECT_STORE = 200 * 2**20


@contextlib.contextmanager
def local_cluster() -> Iterator[Cluster]:
    """A `ray.cluster_utils.Cluster` whose head runs no tasks (CPU 0, as in cluster.yaml); the
    test adds its worker nodes. Shut down afterwards, its temp dir removed."""
    # ray loads in a second or more: only the tests that start a cluster pay for it
    from ray.cluster_utils import Cluster

    ray_tmp = Path(tempfile.mkdtemp(prefix="p2sd-cl-", dir="/tmp"))  # socket paths < 108 bytes
    head = {"num_cpus": 0, "object_store_memory": LOCAL_OBJECT_STORE, "temp_dir": str(ray_tmp)}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
