"""Sweeps under failure, as command lines (processes joined to the session's local Ray and
logging to its MLflow server). One sweep, one trial at a time, over the data folder of its
trials: the generated data, the same data by another path, then a missing folder.

* The first trial's process is killed after two checkpoints: Tune starts it again and it
  continues its own MLflow run from its latest checkpoint.
* The sweep's driver is killed after two checkpoints of the second trial. The same
  command, run again, continues the sweep: the same parent run, the finished trial kept as
  it was, the interrupted one resumed from its checkpoint in its own run.
* The missing folder then fails on each of its 1 + train.max_failures starts, and the
  command exits non-zero, naming that trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers_cluster import ray_env

# a sweep of three trials run twice on 2 shared cores: minutes, more on a busy machine
pytestmark = [pytest.mark.ray, pytest.mark.drill, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY = 30, 5
SETS = [
    f"train.steps={STEPS}",
    "train.batch_size=4",
    f"train.checkpoint_every={EVERY}",
    "train.log_every=1",
    "train.max_failures=1",
    "train.time_budget_min=0",
    "data.image_size=32",
    "sample.steps=1",
    "sample.min_pixels=0",
    "eval.max_images=2",
    "eval.overlays=0",
]
WAIT_S = 900  # for a trial to reach the point where the test interrupts it


def _env(mlflow_server) -> dict[str, str]:
    """The sweep's environment: the session's Ray cluster (a killed driver's actors go with
    it; no second Ray on the machine) and MLflow server."""
    import ray

    return {
        **ray_env(),
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_EXPERIMENT_NAME": "pix2seqd",
        "PYTHONUNBUFFERED": "1",  # the log is read while the sweep runs
    }


def _runs(mlc, query: str) -> list:
    exp = mlc.get_experiment_by_name("pix2seqd")
    return [] if exp is None else mlc.search_runs([exp.experiment_id], query)


def _trial_run(mlc, root: Path):
    runs = _runs(mlc, f"params.`data.root` = '{root}' and attributes.run_name LIKE '%root=%'")
    return runs[0] if runs else None


def _checkpoints(run) -> list[int]:
    return sorted(int(k.split("/")[1]) for k in run.data.tags if k.startswith("checkpoint/"))


def _losses(mlc, run_id: str) -> list[int]:
    return sorted(m.step for m in mlc.get_metric_history(run_id, "train/loss"))


def _restored(mlc, run_id: str) -> list[float]:
    return [m.value for m in mlc.get_metric_history(run_id, "train/restored_from")]


def _two_checkpoints(mlc, root: Path, proc: subprocess.Popen, log: Path):
    """The trial run of `root` once it has tagged two checkpoints (by then Ray Train has
    registered the first); fails if the sweep ended first."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        run = _trial_run(mlc, root)
        if run is not None and run.info.status == "RUNNING" and len(_checkpoints(run)) >= 2:
            return run
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {root} trained:\n{log.read_text()}")
        time.sleep(0.3)
    raise AssertionError(f"{root} had no two checkpoints after {WAIT_S} s:\n{log.read_text()}")


def _kill_trial_processes() -> int:
    """SIGKILL the live Tune trial processes (function trainables); how many."""
    import ray
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    trials = list_actors(
        address, filters=[("state", "=", "ALIVE"), ("class_name", "=", "ImplicitFunc")]
    )
    for actor in trials:
        os.kill(actor.pid, signal.SIGKILL)
    return len(trials)


@pytest.fixture(scope="module")
def sweep(ray_session, mlflow_server, tmp_path_factory):
    """Runs the story of the module docstring; returns what the tests look at."""
    import mlflow.tracking

    from pix2seqd.platform.synthetic.coco import make_coco

    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    tmp = tmp_path_factory.mktemp("fault_sweep")
    missing, first = tmp / "no_such_coco", make_coco(tmp / "coco", 7, 16, 2, 40, 56)
    second = tmp / "same_coco"
    second.symlink_to(first)
    script = tmp / "data_sweep.py"
    script.write_text(
        textwrap.dedent(f"""\
            from pix2seqd.platform.sweep.cli import main
            from pix2seqd.platform.sweep.spec import Axis, Sweep, SweepKind

            roots = ({str(first)!r}, {str(second)!r}, {str(missing)!r})
            main(Sweep("fault_data", SweepKind.TRAIN, (Axis("data.root", roots),), "none"))
        """)
    )
    summary_path, log = tmp / "S.json", tmp / "first.log"
    cmd = [sys.executable, str(script), "--storage-path", str(tmp / "storage")]
    cmd += ["--max-concurrent", "1", "--summary-json", str(summary_path)]
    cmd += [x for s in SETS for x in ("--set", s)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=_env(mlflow_server), stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        a_seen = _two_checkpoints(mlc, first, proc, log)
        assert _kill_trial_processes() >= 1  # the trial's process, not the sweep's
        b_seen = _two_checkpoints(mlc, second, proc, log)
        os.kill(proc.pid, signal.SIGKILL)  # the sweep's driver, as a lost head node would
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    a_done = mlc.get_run(a_seen.info.run_id)  # before the second command
    a_losses = _losses(mlc, a_seen.info.run_id)
    parents = _runs(mlc, "tags.sweep = 'fault_data'")
    again = subprocess.run(
        cmd, cwd=ROOT, env=_env(mlflow_server), capture_output=True, text=True, timeout=1200
    )
    return {
        "mlc": mlc,
        "roots": (missing, first, second),
        "seen": (a_seen, b_seen),
        "a_done": a_done,
        "a_losses": a_losses,
        "parents_before": parents,
        "again": again,
        "summary": json.loads(summary_path.read_text()),
    }


def test_fault_sweep_killed_trial_is_retried_and_finishes(sweep):
    mlc, (a_seen, _), a_done = sweep["mlc"], sweep["seen"], sweep["a_done"]
    killed_after = _checkpoints(a_seen)[-1]
    assert killed_after < STEPS, "the trial finished before its process was killed"
    # finished in the first command, in the run it started (no second run of the point)
    assert a_done.info.status == "FINISHED"
    assert [r.info.run_id for r in _runs(mlc, f"params.`data.root` = '{sweep['roots'][1]}'")] == [
        a_seen.info.run_id
    ]
    # continued from the newest checkpoint Ray Train had registered at the kill (the one
    # last tagged, or the one before; the workers may write more until they are gone)
    restored = _restored(mlc, a_seen.info.run_id)
    assert restored and all(killed_after - EVERY <= r <= STEPS for r in restored), restored
    assert _losses(mlc, a_seen.info.run_id)[-1] == STEPS and _checkpoints(a_done)[-1] == STEPS
    assert "val/pq" in a_done.data.metrics


def test_fault_sweep_killed_driver_continues_with_the_same_command(sweep):
    mlc, again, summary = sweep["mlc"], sweep["again"], sweep["summary"]
    (a_seen, b_seen), a_done = sweep["seen"], sweep["a_done"]
    [parent] = sweep["parents_before"]
    assert parent.info.status == "RUNNING"  # its driver was killed: nobody ended it
    assert "restoring the Tune experiment" in again.stderr, again.stderr[-6000:]
    assert summary["parent_run_id"] == parent.info.run_id  # the same parent run
    assert len(_runs(mlc, "tags.sweep = 'fault_data'")) == 1  # and no second one
    runs = {t["run_id"]: t for t in summary["trials"] if t["run_id"]}
    assert set(runs) == {a_seen.info.run_id, b_seen.info.run_id}  # no run made twice
    assert all(t["status"] == "FINISHED" and t["pq"] is not None for t in runs.values())
    # the finished trial was kept as it was, not trained again
    a_now = mlc.get_run(a_seen.info.run_id)
    assert a_now.info.end_time == a_done.info.end_time
    assert _losses(mlc, a_seen.info.run_id) == sweep["a_losses"]
    # the interrupted one continued from its newest registered checkpoint, as above
    restored = _restored(mlc, b_seen.info.run_id)
    assert restored and _checkpoints(b_seen)[-1] - EVERY <= restored[-1] <= STEPS, restored
    assert _losses(mlc, b_seen.info.run_id)[-1] == STEPS


def test_fault_sweep_with_a_failed_trial_exits_nonzero_naming_it(sweep):
    mlc, again, summary = sweep["mlc"], sweep["again"], sweep["summary"]
    missing = sweep["roots"][0]
    assert again.returncode != 0
    assert "sweep fault_data: 1 of 3 trials failed (2 attempts each)" in again.stderr
    # the trial, by its value, and its cause
    named = f"`root={missing}` (MLflow run none): FileNotFoundError: data root"
    assert named in again.stderr, again.stderr[-6000:]
    failed = [t for t in summary["trials"] if t["status"] == "FAILED"]
    assert failed == [
        {
            "run_id": None,
            "params": {"data.root": str(missing)},
            "pq": None,
            "pq_th": None,
            "pq_st": None,
            "status": "FAILED",
        }
    ]
    parent = mlc.get_run(summary["parent_run_id"])
    assert parent.info.status == "FAILED"
    assert (parent.data.tags["trials"], parent.data.tags["failed_trials"]) == ("3", "1")
