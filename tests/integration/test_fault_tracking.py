"""A tracking-server outage in the middle of a training run (docs/resilience.md).

A real `mlflow server` (SQLite store, fixed port) is stopped once the run has tagged its
first checkpoint, for longer than MLflow's own HTTP retries (set low here), and started
again on the same port and store. Training goes on meanwhile; rank 0's buffered writes
reach the server once it is back, in step order; the run ends FINISHED with every logged
step and every checkpoint tag. The job runs in a process of its own (its own local Ray),
so the MLflow retry settings reach its workers: marker `cluster`."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_cluster import free_ports, ray_env, stop_cluster, wait_until_serving
from helpers_jobs import SMALL_RUN_SETS

pytestmark = [pytest.mark.cluster, pytest.mark.drill, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
STEPS, LOG_EVERY, CHECKPOINT_EVERY = 100, 2, 10
RUN_NAME = "outage"
# MLflow's retries of one request: 2, after pauses of 0 and 2 s, each + up to 1 s of jitter.
# A stopped server refuses connections at once, so the timeout does not add to that; it
# is kept well above a busy server's answer, which the driver's own calls wait for.
RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
RETRY_BUDGET_S = 2 * 1 + 2 * 1.0
OUTAGE_S = 3 * RETRY_BUDGET_S  # the least time the server is away


class Server:
    """`mlflow server` on one port and one SQLite store, to stop and start again."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.proc = root, port, None
        self.uri = f"http://127.0.0.1:{port}"
        self.db = root / "mlflow.db"

    def start(self) -> None:
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.db}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        log = self.root / "server.log"
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until_serving(f"{self.uri}/health", self.proc, log, timeout=300)

    def stop(self) -> None:
        """At once, as a lost head node would (the SQLite store survives that)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)


def _wait_for_tag(mlc, tag: str, job: subprocess.Popen, log: Path) -> str:
    """The id of run RUN_NAME once it has `tag`."""
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        assert job.poll() is None, f"job ended early:\n{log.read_text()[-4000:]}"
        exp = mlc.get_experiment_by_name("pix2seqd")
        runs = (
            mlc.search_runs([exp.experiment_id], f"attributes.run_name = '{RUN_NAME}'")
            if exp
            else []
        )
        if runs and tag in runs[0].data.tags:
            return runs[0].info.run_id
        time.sleep(0.2)
    raise AssertionError(f"no {tag} tag after 400 s:\n{log.read_text()[-4000:]}")


def _job_args(data: Path, tmp: Path) -> list[str]:
    sets = [
        *SMALL_RUN_SETS,
        f"train.steps={STEPS}",
        f"train.log_every={LOG_EVERY}",
        f"train.checkpoint_every={CHECKPOINT_EVERY}",
        f"train.keep_checkpoints={STEPS // CHECKPOINT_EVERY}",  # every checkpoint's tag stays
        "train.num_workers=1",
        "train.cpus_per_worker=1",
        "train.progress_every=0",
        "eval.every_steps=0",
    ]
    args = ["--data-root", str(data), "--storage-path", str(tmp / "storage")]
    return args + ["--run-name", RUN_NAME] + [x for s in sets for x in ("--set", s)]


def test_fault_tracking_outage(tmp_path):
    import mlflow.tracking

    from pix2seqd.platform.synthetic.coco import make_coco

    data = make_coco(tmp_path / "coco", seed=5, n_train=12, n_val=2, min_size=48, max_size=64)
    (tmp_path / "mlflow").mkdir()
    server = Server(tmp_path / "mlflow", free_ports(1)[0])
    server.start()
    mlc = mlflow.tracking.MlflowClient(server.uri)
    env = {**ray_env(), **RETRIES, "MLFLOW_TRACKING_URI": server.uri}
    log = tmp_path / "job.log"
    with open(log, "w") as out:
        job = subprocess.Popen(
            [sys.executable, "jobs/train_coco.py", *_job_args(data, tmp_path)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        run_id = _wait_for_tag(mlc, f"checkpoint/{CHECKPOINT_EVERY}", job, log)
        server.stop()
        down_from = time.time()
        time.sleep(OUTAGE_S)
        down_until = time.time()
        server.start()
        assert job.wait(timeout=600) == 0, log.read_text()[-6000:]
        # rank 0 (its log reaches the job's output through Ray) saw MLflow's retries run out
        assert "training goes on, writes are kept" in log.read_text()
        _check_run(mlc, run_id, server.db, (down_from, down_until))
    finally:
        stop_cluster(job.pid)  # the job's Ray, should it have been left behind
        server.stop()


def _check_run(mlc, run_id: str, db: Path, away: tuple[float, float]) -> None:
    """FINISHED, every train/* metric at every logged step, every checkpoint tag, steps
    logged while the server was `away` (Unix seconds), delivered in step order."""
    run = mlc.get_run(run_id)
    assert run.info.status == "FINISHED"
    logged = range(LOG_EVERY, STEPS + 1, LOG_EVERY)
    keys = [k for k in run.data.metrics if k.startswith("train/")]
    assert "train/loss" in keys
    for key in keys:
        history = mlc.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == list(logged), key
    # training went on while the server was away: steps logged (timestamped) then arrived
    stamps = [m.timestamp / 1000 for m in mlc.get_metric_history(run_id, "train/loss")]
    assert any(away[0] < t < away[1] for t in stamps), (away, stamps)
    checkpoints = sorted(int(k.split("/")[1]) for k in run.data.tags if k.startswith("checkpoint/"))
    assert checkpoints == list(range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY))
    # delivered in step order: the store's insertion order (rowid) of the train/* rows
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute(
            "SELECT step FROM metrics WHERE run_uuid = ? AND key LIKE 'train/%' ORDER BY rowid",
            (run_id,),
        ).fetchall()
    steps = [r[0] for r in rows]
    assert len(steps) == len(keys) * len(logged) and steps == sorted(steps)
