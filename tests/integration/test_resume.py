"""Fault tolerance and exact resume, against one uninterrupted run:

* a training worker process is killed in the middle of a run; Ray Train restarts the worker
  group from the latest checkpoint (FailureConfig), the step counter continues, no
  checkpoint is lost or corrupt;
* a run that stopped (here: it ended at half the steps) is continued with `--resume`, in
  the same MLflow run, from its latest checkpoint.

With data.exact_order the losses after the restart equal the uninterrupted run's. The
learning rate is constant after warm-up (end_lr_factor 1), so a run scheduled for half the
steps has the same learning rates as the full one."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from helpers_jobs import load_job

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

STEPS, EVERY = 60, 10
SETS = [
    f"train.steps={STEPS}",
    "train.batch_size=4",
    f"train.checkpoint_every={EVERY}",
    "train.log_every=1",
    "train.keep_checkpoints=3",
    "train.max_failures=2",
    "train.time_budget_min=0",
    "data.exact_order=true",
    "optim.warmup_steps=5",
    "optim.end_lr_factor=1.0",
    "sample.steps=1",
    "eval.max_images=2",
    "eval.overlays=0",
]
# Same floating-point work on the same data in the same order: the only tolerance needed is
# for a different summation order, which does not happen on one CPU thread per worker.
TOLERANCE = 1e-6


def _args(data, tmp_path, name):
    args = ["--data-root", str(data), "--storage-path", str(tmp_path / name), "--run-name", name]
    return args + [x for s in SETS for x in ("--set", s)]


def _losses(mlc, run_id) -> dict[int, float]:
    """train/loss per step, the value logged last (steps after a restart are logged again)."""
    hist = sorted(mlc.get_metric_history(run_id, "train/loss"), key=lambda m: m.timestamp)
    return {m.step: m.value for m in hist}


def _find_run(mlc, name):
    exp = mlc.get_experiment_by_name("pix2seqd")
    if exp is None:
        return None
    runs = mlc.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
    return runs[0] if runs else None


def _kill_a_worker_after_checkpoint(mlc, name, done: threading.Event) -> int:
    """Wait until run `name` has tagged two checkpoints, then SIGKILL one training worker
    process. Returns the newest checkpoint step seen before the kill.

    Two, not one: rank 0 tags a checkpoint as soon as its upload returns, but Ray Train's
    controller registers it a moment later; a kill in between restarts the worker group
    from the checkpoint before (or from scratch). By the second tag the first is registered."""
    import ray
    from ray.util.state import list_actors

    # this session's cluster by address: another Ray on the machine would make the
    # default lookup fail ("multiple active Ray instances")
    address = ray.get_runtime_context().gcs_address
    while not done.is_set():
        run = _find_run(mlc, name)
        steps = [
            int(k.split("/")[1])
            for k in (run.data.tags if run else {})
            if k.startswith("checkpoint/")
        ]
        if len(steps) >= 2:
            workers = [
                a
                for a in list_actors(address, filters=[("state", "=", "ALIVE")])
                if "TrainWorker" in a.class_name
            ]
            assert workers, "no live training worker found"
            os.kill(workers[-1].pid, signal.SIGKILL)
            return max(steps)
        time.sleep(0.2)
    raise AssertionError("the run finished before a worker could be killed")


@pytest.fixture(scope="module")
def uninterrupted(mlflow_server, tmp_path_factory):
    """(data folder, summary) of the reference run, shared by the tests of this module."""
    from pix2seqd.platform.synthetic.coco import make_coco

    tmp = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        data = make_coco(tmp / "coco", 7, 16, 2, 40, 56)
        return data, load_job("train_coco").main(_args(data, tmp, "uninterrupted"))


def test_killed_worker_resumes_exactly(
    ray_session, mlflow_server, uninterrupted, tmp_path, monkeypatch
):
    import mlflow.tracking

    from pix2seqd.platform.train import checkpoints

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    data, plain = uninterrupted
    job = load_job("train_coco")

    out, done = {}, threading.Event()

    def run() -> None:
        try:
            out.update(job.main(_args(data, tmp_path, "killed")))
        finally:
            done.set()  # the watcher stops instead of waiting for a run that has ended

    thread = threading.Thread(target=run)
    thread.start()
    try:
        killed_after = _kill_a_worker_after_checkpoint(mlc, "killed", done)
    finally:
        thread.join()
    assert out, "the killed run did not finish"
    assert 2 * EVERY <= killed_after < STEPS

    a, b = _losses(mlc, plain["mlflow_run_id"]), _losses(mlc, out["mlflow_run_id"])
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    restarts = [
        m.value for m in mlc.get_metric_history(out["mlflow_run_id"], "train/restored_from")
    ]
    logged = len(mlc.get_metric_history(out["mlflow_run_id"], "train/loss"))
    assert restarts, f"the worker group did not restart from a checkpoint ({logged} losses logged)"
    # from a registered checkpoint: at least the one before the newest tag seen at the kill
    assert all(killed_after - EVERY <= r < STEPS and r % EVERY == 0 for r in restarts), restarts
    worst = max(abs(a[s] - b[s]) for s in a)
    assert worst <= TOLERANCE, f"losses differ after the restart by up to {worst}"

    tags = mlc.get_run(out["mlflow_run_id"]).data.tags
    kept = sorted(int(k.split("/")[1]) for k in tags if k.startswith("checkpoint/"))
    assert kept == [STEPS - 2 * EVERY, STEPS - EVERY, STEPS]  # the last 3, none lost
    for step in kept:
        with checkpoints.fetched(tags[f"checkpoint/{step}"]) as d:
            snap = checkpoints.load(d)
        assert snap["step"] == step and snap["data_position"] == step * 4
        assert len(snap["rng"]) == 2  # every rank's RNG state
    assert out["metrics"] == plain["metrics"]  # same final weights, same PQ


def test_stopped_run_continues_with_resume(
    ray_session, mlflow_server, uninterrupted, tmp_path, monkeypatch
):
    import mlflow.tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    data, plain = uninterrupted
    job = load_job("train_coco")
    half = job.main(_args(data, tmp_path, "stopped") + ["--set", f"train.steps={STEPS // 2}"])
    run_id = half["mlflow_run_id"]
    resumed = job.main(["--resume", f"runs:/{run_id}", "--set", f"train.steps={STEPS}"])

    assert resumed["mlflow_run_id"] == run_id  # the same MLflow run, continued
    assert mlc.get_run(run_id).info.status == "FINISHED"
    a, b = _losses(mlc, plain["mlflow_run_id"]), _losses(mlc, run_id)
    assert sorted(b) == list(range(1, STEPS + 1))
    assert len(mlc.get_metric_history(run_id, "train/loss")) == STEPS  # nothing trained twice
    restarts = mlc.get_metric_history(run_id, "train/restored_from")
    assert [(m.step, m.value) for m in restarts] == [(STEPS // 2, STEPS // 2)]
    worst = max(abs(a[s] - b[s]) for s in a)
    assert worst <= TOLERANCE, f"losses differ after --resume by up to {worst}"
    assert resumed["metrics"] == plain["metrics"]
