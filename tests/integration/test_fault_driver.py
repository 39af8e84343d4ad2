"""A lost training driver (docs/resilience.md, "Lost drivers"), on the session's Ray and a
real MLflow server.

A train_coco driver runs in its own process, joined to the session's Ray, started with
`--resume auto` (no run of its name yet: a new run). While it trains, a second driver of
the same command, or of `--resume runs:/<id>`, is refused with a message naming the run
and the holder. Then the first driver is SIGKILLed after its checkpoints: its run stays
RUNNING until the next `--resume auto` notices the dead driver and marks it FAILED, and
that same command continues the same MLflow run from the latest checkpoint to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow.tracking
import pytest
from helpers_jobs import ROOT, SMALL_RUN_SETS, load_job

from pix2seqd.platform import tracking
from pix2seqd.platform.cli import parse_job_args
from pix2seqd.platform.train.checkpoints import CheckpointTags
from pix2seqd.platform.train.run_lock import (
    HEARTBEAT_TAG,
    LOST_TAG,
    PID_TAG,
    RELEASED,
    RunLockedError,
)

pytestmark = [pytest.mark.ray, pytest.mark.drill, pytest.mark.timeout(900)]

EXPERIMENT = "fault-driver"
STEPS, EVERY = 40, 4
SETS = [
    *SMALL_RUN_SETS,
    f"train.steps={STEPS}",
    f"train.checkpoint_every={EVERY}",
    "train.log_every=1",
]


@dataclass
class Driver:
    """The first driver: its process, its command's flags, its MLflow run and log."""

    proc: subprocess.Popen
    argv: list[str]
    run_id: str
    log: Path


def _mlc(uri: str):
    return mlflow.tracking.MlflowClient(uri)


def _runs(mlc) -> list:
    exp = mlc.get_experiment_by_name(EXPERIMENT)
    return list(mlc.search_runs([exp.experiment_id])) if exp else []


def _wait(predicate, driver_proc, log: Path, what: str, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if driver_proc.poll() is not None:
            raise AssertionError(f"the driver ended before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _steps(run) -> list[int]:
    return sorted(CheckpointTags.read(run.data.tags).refs)


@pytest.fixture(scope="module")
def started(ray_session, mlflow_server, tmp_path_factory):
    """The first driver, `python jobs/train_coco.py ... --resume auto` in its own process,
    once its MLflow run exists; killed at the end if still alive."""
    from pix2seqd.platform.synthetic.coco import make_coco

    tmp = tmp_path_factory.mktemp("driver")
    data = make_coco(tmp / "coco", 5, 12, 2, 40, 56)
    argv = ["--experiment", EXPERIMENT, "--data-root", str(data)]
    argv += ["--storage-path", str(tmp / "ray"), *[x for s in SETS for x in ("--set", s)]]
    argv += ["--resume", "auto"]
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
        "MLFLOW_TRACKING_URI": mlflow_server,
    }
    log = tmp / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "jobs" / "train_coco.py"), *argv],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        mlc = _mlc(mlflow_server)
        [run] = _wait(lambda: _runs(mlc), proc, log, "its MLflow run")
        yield Driver(proc, argv, run.info.run_id, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def killed(started, mlflow_server):
    """The first driver SIGKILLed once it has tagged two checkpoints (by the second tag, Ray
    Train has registered the first), and reaped."""
    mlc = _mlc(mlflow_server)
    if started.proc.poll() is None:
        _wait(
            lambda: len(_steps(mlc.get_run(started.run_id))) >= 2,
            started.proc,
            started.log,
            "two checkpoints",
        )
        os.kill(started.proc.pid, signal.SIGKILL)
    assert started.proc.wait() == -signal.SIGKILL, "the driver ended before it was killed"
    return started


def _job_env(monkeypatch, uri: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, EXPERIMENT)  # --experiment sets it; restored


def test_fault_driver_second_driver_is_refused(started, mlflow_server, monkeypatch):
    _job_env(monkeypatch, mlflow_server)
    job = load_job("train_coco")
    pid = started.proc.pid
    for argv in (started.argv, ["--resume", f"runs:/{started.run_id}"]):
        with pytest.raises(RunLockedError) as err:
            job.main(argv)
        message = str(err.value)
        assert f"MLflow run {started.run_id}" in message
        assert f"pid {pid}" in message and f"kill {pid} on " in message
        assert "--resume auto" in message
    assert started.proc.poll() is None, "the first driver stopped"
    run = _mlc(mlflow_server).get_run(started.run_id)
    assert run.info.status == "RUNNING" and run.data.tags[PID_TAG] == str(pid)
    assert len(_runs(_mlc(mlflow_server))) == 1  # the refused driver made no run


def test_fault_driver_dead_drivers_run_is_marked_failed(killed, mlflow_server, monkeypatch):
    mlc = _mlc(mlflow_server)
    assert mlc.get_run(killed.run_id).info.status == "RUNNING"  # nobody has noticed yet
    _job_env(monkeypatch, mlflow_server)
    job = load_job("train_coco")
    parser = job.build_parser()
    # what --resume auto does before it starts Ray: it notices the dead driver
    _, opts = job.training_setup(parser, parse_job_args(parser, killed.argv), "")
    assert opts.resume == killed.run_id
    run = mlc.get_run(killed.run_id)
    assert run.info.status == "FAILED"
    assert f"pid {killed.proc.pid}" in run.data.tags[LOST_TAG]
    assert "marked FAILED" in run.data.tags[LOST_TAG]


def test_fault_driver_resume_auto_continues_the_run(killed, mlflow_server, monkeypatch):
    mlc = _mlc(mlflow_server)
    _job_env(monkeypatch, mlflow_server)
    tagged = max(_steps(mlc.get_run(killed.run_id)))  # the newest checkpoint before
    summary = load_job("train_coco").main(killed.argv)  # the same command again

    assert summary["mlflow_run_id"] == killed.run_id
    assert [r.info.run_id for r in _runs(mlc)] == [killed.run_id]  # no new run
    run = mlc.get_run(killed.run_id)
    assert run.info.status == "FINISHED"
    assert f"pid {killed.proc.pid}" in run.data.tags[LOST_TAG]  # noticed on the way
    assert run.data.tags[PID_TAG] == str(os.getpid())
    assert run.data.tags[HEARTBEAT_TAG] == RELEASED
    [restored] = mlc.get_metric_history(killed.run_id, "train/restored_from")
    r = int(restored.value)
    # from a checkpoint the killed driver had registered, not from scratch
    assert EVERY <= r <= tagged and r % EVERY == 0 and restored.step == r
    losses = mlc.get_metric_history(killed.run_id, "train/loss")
    assert {m.step for m in losses} == set(range(1, STEPS + 1))
    after = sorted(m.step for m in losses if m.timestamp >= restored.timestamp)
    assert after == list(range(r + 1, STEPS + 1))  # the step counter continues
    assert STEPS in _steps(run)
