"""The driver lease of a training run (platform/train/run_lock.py) and `--resume auto`, on a
real MLflow store (SQLite): who counts as a live holder, claims and their races, the
heartbeat through a tracking outage, dead drivers' runs marked FAILED, the run that
`--resume auto` picks."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid

import mlflow.tracking
import pytest
from helpers_jobs import load_job

from pix2seqd.platform import tracking
from pix2seqd.platform.cli import parse_job_args
from pix2seqd.platform.train import run_lock
from pix2seqd.platform.train.checkpoints import STEP_TAG_PREFIX, CheckpointTags
from pix2seqd.platform.train.run_lock import (
    HEARTBEAT_TAG,
    ID_TAG,
    LOST_TAG,
    DriverLease,
    Holder,
    LeaseTiming,
    RunLockedError,
)

FAST = LeaseTiming(heartbeat_s=0.1, stale_s=5.0, settle_s=0.5)
# claims racing in two threads of a loaded machine: a read and its write may be a second apart
RACE = LeaseTiming(heartbeat_s=0.1, stale_s=5.0, settle_s=3.0)
# a driver on another machine: its process cannot be checked from here
ELSEWHERE = Holder("elsewhere", 4242, "f" * 32, "another-machine")


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    mlflow.tracking.MlflowClient(uri).search_experiments()  # creates the tables once
    return uri


@pytest.fixture
def mlc(uri):
    return mlflow.tracking.MlflowClient(uri)


@pytest.fixture
def experiment(mlc) -> str:
    return mlc.create_experiment(f"lock-{uuid.uuid4().hex[:8]}")


def _held_by(holder: Holder, age_s: float) -> dict[str, str]:
    return {**holder.tags(), HEARTBEAT_TAG: repr(time.time() - age_s)}


def _run(mlc, experiment, name="r", status="RUNNING", tags=None, checkpoint=False) -> str:
    tags = dict(tags or {})
    if checkpoint:
        tags[CheckpointTags.step_key(10)] = "/ckpt/10"
    run_id = mlc.create_run(experiment, run_name=name, tags=tags).info.run_id
    if status != "RUNNING":
        mlc.set_terminated(run_id, status)
    return run_id


def _ended_process() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_holder_is_live_while_its_heartbeat_is_fresh():
    here = Holder.this_process()
    assert run_lock.live_holder(_held_by(ELSEWHERE, 1.0), here, FAST) == ELSEWHERE
    assert run_lock.live_holder(_held_by(ELSEWHERE, FAST.stale_s + 1), here, FAST) is None
    released = {**ELSEWHERE.tags(), HEARTBEAT_TAG: run_lock.RELEASED}
    assert run_lock.live_holder(released, here, FAST) is None
    assert run_lock.live_holder({HEARTBEAT_TAG: repr(time.time())}, here, FAST) is None
    ahead = {**ELSEWHERE.tags(), HEARTBEAT_TAG: repr(time.time() + 60)}  # a clock ahead
    assert run_lock.live_holder(ahead, here, FAST) == ELSEWHERE


def test_a_holder_on_this_machine_is_dead_once_its_process_is_gone():
    here = Holder.this_process()
    assert here.pid_space  # Linux: boot id and pid namespace
    ended = Holder(here.host, _ended_process(), "e" * 32, here.pid_space)
    assert run_lock.live_holder(_held_by(ended, 0.0), here, FAST) is None
    alive = Holder(here.host, here.pid, "a" * 32, here.pid_space)
    assert run_lock.live_holder(_held_by(alive, 0.0), here, FAST) == alive
    # the same pid seen from another pid space cannot be checked: the heartbeat decides
    unseen = Holder(here.host, ended.pid, "u" * 32, "another-machine")
    assert run_lock.live_holder(_held_by(unseen, 0.0), here, FAST) == unseen
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while run_lock._process_alive(zombie.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # exited, not yet reaped: a zombie is an ended driver
    assert not run_lock._process_alive(zombie.pid)
    zombie.wait()


def test_a_claim_is_refused_while_another_driver_holds_the_run(mlc, experiment):
    run_id = _run(mlc, experiment, "tiny-coco", tags=_held_by(ELSEWHERE, 1.0))
    with pytest.raises(RunLockedError) as err:
        DriverLease(mlc, FAST).claim(run_id)
    message = str(err.value)
    for part in (run_id, "'tiny-coco'", "host elsewhere, pid 4242", "kill 4242 on elsewhere"):
        assert part in message
    assert "--resume auto" in message and "ray job stop" in message
    tags = mlc.get_run(run_id).data.tags
    assert tags[ID_TAG] == ELSEWHERE.id and LOST_TAG not in tags


def test_a_claim_marks_a_dead_drivers_run_failed_then_takes_it(mlc, experiment):
    run_id = _run(mlc, experiment, tags=_held_by(ELSEWHERE, FAST.stale_s + 1))
    lease = DriverLease(mlc, FAST)
    lease.claim(run_id)
    run = mlc.get_run(run_id)
    assert run.info.status == "FAILED"  # the caller (open_run) marks it RUNNING again
    assert "host elsewhere, pid 4242" in run.data.tags[LOST_TAG]
    assert f"by host {lease.holder.host}, pid {lease.holder.pid}" in run.data.tags[LOST_TAG]
    assert run.data.tags[ID_TAG] == lease.holder.id


def test_of_two_drivers_claiming_together_one_wins(mlc, experiment):
    run_id = _run(mlc, experiment, status="FAILED", checkpoint=True)
    leases = [DriverLease(mlflow.tracking.MlflowClient(mlc.tracking_uri), RACE) for _ in "ab"]
    start, outcome = threading.Barrier(2), {}

    def claim(lease: DriverLease) -> None:
        start.wait()
        try:
            lease.claim(run_id)
            outcome[lease.holder.id] = "held"
        except RunLockedError:
            outcome[lease.holder.id] = "refused"

    threads = [threading.Thread(target=claim, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome.values()) == ["held", "refused"]
    [winner] = [k for k, v in outcome.items() if v == "held"]
    assert mlc.get_run(run_id).data.tags[ID_TAG] == winner


def test_a_new_run_under_resume_auto_gives_way_to_the_first_of_its_name(mlc, experiment):
    first, second = DriverLease(mlc, FAST), DriverLease(mlc, FAST)
    now = int(time.time() * 1000)
    a = mlc.create_run(experiment, now, tags=first.tags(), run_name="same").info.run_id
    b = mlc.create_run(experiment, now + 5, tags=second.tags(), run_name="same").info.run_id
    with pytest.raises(RunLockedError, match=a):
        second.confirm_sole(b, "same", experiment)
    assert mlc.get_run(b).info.lifecycle_stage == "deleted"
    first.confirm_sole(a, "same", experiment)  # no earlier run of the name: it stays
    assert mlc.get_run(a).info.lifecycle_stage == "active"


class _Outage:
    """An MLflow client whose calls fail while `down` is set, as with a stopped server."""

    def __init__(self, mlc):
        self._mlc, self.down = mlc, threading.Event()

    def __getattr__(self, name):
        call = getattr(self._mlc, name)

        def guarded(*args, **kwargs):
            if self.down.is_set():
                raise ConnectionError("tracking server unreachable")
            return call(*args, **kwargs)

        return guarded


def _heartbeat(mlc, run_id) -> str:
    return mlc.get_run(run_id).data.tags[HEARTBEAT_TAG]


def test_the_heartbeat_outlives_a_tracking_outage_then_releases(mlc, experiment, caplog):
    client = _Outage(mlc)
    lease = DriverLease(client, FAST)
    run_id = _run(mlc, experiment, tags=lease.tags())
    with caplog.at_level(logging.WARNING, "pix2seqd"), lease.kept(run_id):
        time.sleep(1.0)
        before = float(_heartbeat(mlc, run_id))
        client.down.set()
        time.sleep(1.0)
        during = float(_heartbeat(mlc, run_id))
        client.down.clear()
        time.sleep(1.0)
        after = float(_heartbeat(mlc, run_id))
    assert before <= during < after and time.time() - after < 1.0
    assert any("heartbeat" in r.message and "retrying" in r.message for r in caplog.records)
    assert not lease.lost.is_set()
    assert _heartbeat(mlc, run_id) == run_lock.RELEASED


def test_a_lease_taken_over_is_noticed_and_left_alone(mlc, experiment, caplog):
    lease = DriverLease(mlc, FAST)
    run_id = _run(mlc, experiment, tags=lease.tags())
    other = _held_by(ELSEWHERE, 0.0)
    with caplog.at_level(logging.ERROR, "pix2seqd"), lease.kept(run_id):
        tracking.set_tags(mlc, run_id, other)
        assert lease.lost.wait(5.0)
    tags = mlc.get_run(run_id).data.tags
    # not released by the driver that lost it (a heartbeat it read just before the takeover
    # may still have landed: the other holder's lease stays fresh either way)
    assert tags[ID_TAG] == ELSEWHERE.id and tags[HEARTBEAT_TAG] != run_lock.RELEASED
    assert any("held by another driver" in r.message for r in caplog.records)


def test_the_checkpoint_tags_are_the_ones_the_workers_write():
    assert run_lock.CHECKPOINT_TAG_PREFIX == STEP_TAG_PREFIX
    assert CheckpointTags.step_key(10).startswith(run_lock.CHECKPOINT_TAG_PREFIX)


def test_resume_auto_picks_the_newest_unfinished_run_with_a_checkpoint(mlc, experiment):
    resumable = lambda: run_lock.resumable_run(mlc, experiment, "n", FAST)  # noqa: E731
    assert resumable() is None  # no run of the name: a new run
    _run(mlc, experiment, "n", "FINISHED", checkpoint=True)
    _run(mlc, experiment, "other", "FAILED", checkpoint=True)
    assert resumable() is None  # a finished run is not continued
    failed = _run(mlc, experiment, "n", "FAILED", checkpoint=True)
    _run(mlc, experiment, "n", "KILLED")  # newer, but died before its first checkpoint
    assert resumable() == failed
    dead = _run(mlc, experiment, "n", tags=_held_by(ELSEWHERE, FAST.stale_s + 1), checkpoint=True)
    assert resumable() == dead
    assert mlc.get_run(dead).info.status == "FAILED"  # noticed on the way
    assert "host elsewhere, pid 4242" in mlc.get_run(dead).data.tags[LOST_TAG]
    live = _run(mlc, experiment, "n", tags=_held_by(ELSEWHERE, 1.0))
    with pytest.raises(RunLockedError, match=live):
        resumable()


def test_a_training_job_marks_the_runs_of_dead_drivers_failed(mlc, experiment):
    here = Holder.this_process()
    dead = _run(mlc, experiment, tags=_held_by(ELSEWHERE, FAST.stale_s + 1))
    gone = Holder(here.host, _ended_process(), "g" * 32, here.pid_space)
    gone_run = _run(mlc, experiment, tags=_held_by(gone, 0.0))
    live = _run(mlc, experiment, tags=_held_by(ELSEWHERE, 1.0))
    leaseless = _run(mlc, experiment)
    ended = _run(mlc, experiment, "x", "KILLED", tags=_held_by(ELSEWHERE, FAST.stale_s + 1))
    assert run_lock.mark_dead_runs(mlc, experiment, here, FAST) == 2
    status = {r: mlc.get_run(r).info.status for r in (dead, gone_run, live, leaseless, ended)}
    assert status == {
        dead: "FAILED",
        gone_run: "FAILED",
        live: "RUNNING",
        leaseless: "RUNNING",
        ended: "KILLED",
    }
    assert f"pid {gone.pid}" in mlc.get_run(gone_run).data.tags[LOST_TAG]


def test_the_train_jobs_resume_auto_finds_the_run_of_their_command(uri, mlc, monkeypatch):
    """training_setup with --resume auto: none yet -> a new run; then the unfinished run of
    the command's run name, with its own config and storage path."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(tracking.EXPERIMENT_ENV, "")  # parse_job_args sets it; restored after
    job = load_job("train_coco")
    argv = ["--experiment", "auto", "--set", "optim.lr=5e-4", "--resume", "auto"]
    parser = job.build_parser()
    cfg, opts = job.training_setup(parser, parse_job_args(parser, argv), "")
    assert (opts.resume, opts.resume_auto, opts.run_name) == ("", True, "tiny-coco-lr5e-4")
    assert cfg.optim.lr == 5e-4

    params = {"optim.lr": "0.0005", "train.steps": "7"}  # the run's config (its params)
    experiment = tracking.experiment_id(mlc, "auto")
    run_id = tracking.start_run(
        mlc,
        params,
        {"storage_path": "/runs", CheckpointTags.step_key(5): "/runs/5"},
        "tiny-coco-lr5e-4",
    )
    assert mlc.get_run(run_id).info.experiment_id == experiment
    mlc.set_terminated(run_id, "FAILED")
    cfg, opts = job.training_setup(parser, parse_job_args(parser, argv), "")
    assert (opts.resume, opts.resume_auto, opts.storage_path) == (run_id, True, "/runs")
    assert cfg.train.steps == 7 and cfg.optim.lr == 5e-4
