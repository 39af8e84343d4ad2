"""Restarts that go wrong or take time, on the session's local Ray (train_coco, 2 workers).

One run with a time budget of seconds, past half of it: its newest checkpoint is truncated,
then a worker is killed. Its tests:

* the restarted worker group sets the checkpoint aside (tag `corrupt_checkpoint/<step>`),
  continues from the one before, and the run finishes;
* the budget counts the training time of both attempts, and the learning rate decaying to
  the budget goes on where it was.

Another run, with unlimited restarts (`train.max_failures=-1`), whose restarts fail before
writing a checkpoint: it ends at `train.crash_loop_limit` failures in a row.

A worker is killed as in test_resume.py; which checkpoints Ray Train has registered is read
from its record of the run (helpers_restarts.py)."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers_jobs import load_job
from helpers_restarts import find_run, registered, run_folder

pytestmark = [pytest.mark.ray, pytest.mark.drill, pytest.mark.timeout(900)]

BASE = [
    "train.batch_size=4",
    "train.log_every=1",
    "train.keep_checkpoints=3",
    "train.max_failures=2",
    "train.progress_every=0",
    "data.exact_order=true",
    "optim.warmup_steps=2",
    "sample.steps=1",
    "eval.max_images=2",
    "eval.overlays=0",
]
BUDGET_S, EVERY = 40.0, 4


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    from pix2seqd.platform.synthetic.coco import make_coco

    return make_coco(tmp_path_factory.mktemp("restarts") / "coco", 7, 16, 2, 40, 56)


def _args(data: Path, storage: Path, name: str, sets: list[str]) -> list[str]:
    args = ["--data-root", str(data), "--storage-path", str(storage), "--run-name", name]
    return args + [x for s in BASE + sets for x in ("--set", s)]


def _kill_a_worker() -> None:
    import ray
    from ray.util.state import list_actors

    # this session's cluster by address: another Ray on the machine would make the
    # default lookup fail ("multiple active Ray instances")
    address = ray.get_runtime_context().gcs_address
    workers = [
        a
        for a in list_actors(address, filters=[("state", "=", "ALIVE")])
        if "TrainWorker" in a.class_name
    ]
    assert workers, "no live training worker found"
    os.kill(workers[-1].pid, signal.SIGKILL)


def _when(done: threading.Event, ready: Callable, what: str):
    """ready()'s first truthy value, polled while the run goes on."""
    while not done.is_set():
        value = ready()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"the run ended before {what}")


def _run_during(job_args: list[str], act: Callable[[threading.Event], object]):
    """Run train_coco in a thread while `act(done)` acts on it; (summary or None, the
    job's exception or None, what `act` returned)."""
    job, out, errors, done = load_job("train_coco"), {}, [], threading.Event()

    def run() -> None:
        try:
            out.update(job.main(job_args))
        except Exception as err:  # noqa: BLE001 - the test inspects it
            errors.append(err)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        acted = act(done)
    finally:
        thread.join()
    return out or None, errors[0] if errors else None, acted


def _history(mlc, run_id: str, key: str) -> dict[int, tuple[float, int]]:
    """step -> (value, timestamp ms) of the value logged last at each step."""
    hist = sorted(mlc.get_metric_history(run_id, key), key=lambda m: m.timestamp)
    return {m.step: (m.value, m.timestamp) for m in hist}


@pytest.fixture(scope="module")
def restarted(ray_session, mlflow_server, coco, tmp_path_factory):
    """One budgeted run (`train.decay_to_budget`) whose newest registered checkpoint is
    truncated, once it records 40-75 % of the budget spent, before a worker is killed:
    (MLflow client, summary, run id, the truncated folder's name, storage folder)."""
    import mlflow.tracking

    from pix2seqd.platform.train import checkpoints

    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    storage = tmp_path_factory.mktemp("restarted") / "storage"
    sets = [
        "train.steps=2000",  # an upper bound: the budget ends the run (at about 100 steps)
        f"train.checkpoint_every={EVERY}",
        f"train.time_budget_min={BUDGET_S / 60}",
        "train.decay_to_budget=true",
        "optim.end_lr_factor=0.1",
    ]

    def truncate_newest_and_kill(done: threading.Event) -> tuple[str, str]:
        run_id = _when(done, lambda: find_run(mlc, "restarted"), "it started").info.run_id
        seconds: dict[str, float] = {}  # training seconds each registered checkpoint records

        def late_newest():
            kept = registered(storage, run_id)
            if len(kept) < 2:
                return None
            if kept[-1] not in seconds:
                snap = checkpoints.load(run_folder(storage, run_id) / kept[-1], mmap=True)
                seconds[kept[-1]] = snap["train_seconds"]
            # a restart with much of the budget spent, and some left
            return 0.4 * BUDGET_S < seconds[kept[-1]] < 0.75 * BUDGET_S and kept[-1]

        newest = _when(done, late_newest, "a checkpoint between 40 and 75 % of the budget")
        path = run_folder(storage, run_id) / newest / checkpoints.FILE
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        _kill_a_worker()
        return run_id, newest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        out, err, (run_id, truncated) = _run_during(
            _args(coco, storage, "restarted", sets), truncate_newest_and_kill
        )
    assert err is None and out, f"the run did not finish: {err!r}"
    return mlc, out, run_id, truncated, storage


def test_fault_corrupt_checkpoint(ray_session, restarted):
    from pix2seqd.platform.train import checkpoints

    mlc, out, run_id, truncated, storage = restarted
    bad_step = checkpoints.folder_order(truncated)[0]
    run = mlc.get_run(run_id)
    assert run.info.status == "FINISHED"
    note = run.data.tags[f"corrupt_checkpoint/{bad_step}"]
    assert truncated in note and "PytorchStreamReader" in note  # which, and why
    folder = run_folder(storage, run_id) / truncated
    # set aside in place, until Ray Train deletes the folder in its turn
    assert (folder / f"{checkpoints.FILE}.corrupt").is_file() or not folder.exists()
    assert not (folder / checkpoints.FILE).exists()
    restarts = [m.value for m in mlc.get_metric_history(run_id, "train/restored_from")]
    assert restarts == [bad_step - EVERY], restarts  # the previous kept checkpoint
    last = max(_history(mlc, run_id, "train/loss"))
    assert sorted(_history(mlc, run_id, "train/loss")) == list(range(1, last + 1))
    assert not run.data.tags["best_checkpoint"].endswith(f"/{truncated}")
    with checkpoints.fetched(out["checkpoint"]) as d:  # what the run stands for loads
        assert checkpoints.load(d)["step"] == last
    # every checkpoint still tagged loads and holds its step, none is the one set aside
    tags = run.data.tags
    refs = {int(k.split("/")[1]): v for k, v in tags.items() if k.startswith("checkpoint/")}
    assert last in refs
    for step, ref in refs.items():
        assert not ref.endswith(f"/{truncated}")
        with checkpoints.fetched(ref) as d:
            assert checkpoints.load(d)["step"] == step


def test_fault_budget_across_restart(ray_session, restarted):
    from pix2seqd.platform.train import checkpoints

    mlc, out, run_id, _, _ = restarted
    [restarted_from] = mlc.get_metric_history(run_id, "train/restored_from")
    restored = int(restarted_from.value)
    loss, lr = _history(mlc, run_id, "train/loss"), _history(mlc, run_id, "train/lr")
    speed = _history(mlc, run_id, "train/img_per_s")
    last = max(loss)
    # Training time of each attempt from MLflow: the timestamps of its steps, plus its
    # first step's own duration, measured by the loop's meter from the attempt's start
    # (with the wait for the first batch): 4 images (train.batch_size) / train/img_per_s.
    before = (loss[restored][1] - loss[1][1]) / 1000 + 4 / speed[1][0]
    after = (loss[last][1] - loss[restored + 1][1]) / 1000 + 4 / speed[restored + 1][0]
    step_s = statistics.median(
        (loss[s + 1][1] - loss[s][1]) / 1000 for s in range(restored + 1, last)
    )
    slack = 8 * step_s + 2.0  # the budget is checked every 8 steps
    # a fresh budget after the restart would overshoot by `before`: more than the slack
    assert before > slack, (before, slack)
    total = before + after
    assert BUDGET_S - slack < total < BUDGET_S + slack, (before, after, slack)
    # the decay goes on across the restart: never up again after the warm-up
    peak = max(v for v, _ in lr.values())
    rates = [lr[s][0] for s in range(3, last + 1)]
    assert all(b <= a for a, b in zip(rates, rates[1:])), (restored, rates)
    assert lr[restored + 1][0] < peak * (1 - 0.9 * (before - 1.0) / BUDGET_S)
    assert rates[-1] < peak * (0.1 + 0.9 * slack / BUDGET_S)
    with checkpoints.fetched(out["checkpoint"]) as d:
        seconds = checkpoints.load(d)["train_seconds"]
    assert BUDGET_S < seconds < BUDGET_S + slack  # recorded over both attempts


def test_fault_crash_loop_ends_an_unlimited_run(
    ray_session, mlflow_server, coco, tmp_path, monkeypatch
):
    import mlflow.tracking

    from pix2seqd.platform.train import checkpoints

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlc = mlflow.tracking.MlflowClient(mlflow_server)
    storage = tmp_path / "storage"
    sets = [
        "train.steps=400",
        "train.checkpoint_every=4",
        "train.time_budget_min=0",
        "train.max_failures=-1",  # unlimited: the guard alone can end the run
        "train.crash_loop_limit=2",
    ]

    def truncate_all_and_kill(done: threading.Event) -> str:
        run_id = _when(done, lambda: find_run(mlc, "loop"), "it started").info.run_id
        kept = _when(done, lambda: registered(storage, run_id), "a checkpoint")
        for name in kept:  # no restart can load a checkpoint now
            path = run_folder(storage, run_id) / name / checkpoints.FILE
            path.write_bytes(path.read_bytes()[:100])
        _kill_a_worker()
        return run_id

    out, err, run_id = _run_during(_args(coco, storage, "loop", sets), truncate_all_and_kill)
    assert out is None and err is not None, "the run went on"
    assert "2 times in a row without writing a checkpoint" in str(err), err
    assert "no checkpoint of the run" in str(err)  # the restart's own failure, named
    assert mlc.get_run(run_id).info.status == "FAILED"
    assert not mlc.get_metric_history(run_id, "train/restored_from")  # no restart trained
