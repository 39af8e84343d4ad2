"""Shared fixtures: one local Ray per test session, one real MLflow server per session, a
local S3-compatible server (moto) per test that asks for it.

Environment settings that keep Ray from hanging or nagging on 2-core machines.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs
import pytest

for _k, _v in {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_DEDUP_LOGS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TQDM_DISABLE": "1",
}.items():
    os.environ.setdefault(_k, _v)

ROOT = Path(__file__).resolve().parents[1]
S3_BUCKET = "pix2seqd-test"


@pytest.fixture(autouse=True)
def package_records_reach_caplog(monkeypatch):
    """The package's logger does not propagate once a job configured it (platform/log.py);
    each test starts with propagation on so `caplog` sees the records."""
    monkeypatch.setattr(logging.getLogger("pix2seqd"), "propagate", True)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(
        num_cpus=4, object_store_memory=256 * 2**20, log_to_driver=False, include_dashboard=True
    )
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server():
    """A real `mlflow server` (SQLite backend, proxied artifacts) on a free local port."""
    tmp = Path(tempfile.mkdtemp(prefix="pix2seqd-mlflow-"))
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp}/mlflow.db",
        "--artifacts-destination",
        str(tmp / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{uri}/health", proc, tmp / "server.log")
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loaded machine: the server's workers linger
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_http(url: str, proc, log: Path, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server not ready after {timeout} s: {log.read_text()[-2000:]}")


@pytest.fixture()
def s3_server(monkeypatch):
    """A local S3-compatible server (moto, in this process) on a free port with one bucket;
    AWS_* variables point every client at it, Ray workers and job processes started after
    this included."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    fs, _ = pafs.FileSystem.from_uri(f"s3://{S3_BUCKET}?allow_bucket_creation=true")
    fs.create_dir(S3_BUCKET)
    yield f"s3://{S3_BUCKET}"
    server.stop()
