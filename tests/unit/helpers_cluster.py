"""Processes of Ray clusters that a test starts itself (`ray start`, the fake autoscaler):
their environment, free ports, and stopping exactly them, by process id.

Not `ray stop --force`: that kills every Ray process on the machine, other test runs' included.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path


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
