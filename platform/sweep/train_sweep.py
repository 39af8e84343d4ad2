"""Training sweeps: each trial is a full training job (Ray Train, the same `train_coco` as
`jobs/train_coco.py`) launched from a Ray Tune function trainable, nested in MLflow under
the sweep's parent run.

Ray 2.60 runs Train V2, where a `TorchTrainer` cannot be handed to a `Tuner`; the trial
function builds and fits it instead, with `TuneReportCallback` forwarding the workers'
checkpoint reports (`step`, `val/pq` when evaluated) to Tune, which is what ASHA reads.

Failures are retried at two levels. Inside a trial, Ray Train restarts a failed worker
group from the latest checkpoint (a killed worker, a lost worker node) up to
`train.max_failures` times, as in a training job. Tune starts the trial itself again up to
`trial_retries` times (`train.max_failures`, finite): for what Ray Train cannot recover,
because the trial's own process holds Ray Train's controller (that process killed, its
node lost) or because the failure is outside the workers (loading data, the final
evaluation, MLflow). A trial started again resumes its own MLflow run and Ray Train
checkpoints (`resume.earlier_trial_run`), so it continues rather than starts over. A trial
that keeps failing is thus started at most 1 + `trial_retries` times, its worker group
restarted at most `train.max_failures` times (and no more than `train.crash_loop_limit`
times in a row without a new checkpoint) per start; then the trial fails and the sweep
names it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import ray
import ray.tune
from ray.tune.schedulers import ASHAScheduler

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, TrainConfig, flatten, from_flat, override
from pix2seqd.platform.log import configure_logging, package_level
from pix2seqd.platform.sweep.resume import (
    earlier_trial_run,
    experiment_uri,
    point_values,
    tune_name,
)
from pix2seqd.platform.sweep.spec import Sweep, trial_label
from pix2seqd.platform.train.options import RunOptions, storage_path
from pix2seqd.platform.train.run import train_coco
from pix2seqd.platform.train.run_lock import Holder, LeaseTiming, live_holder

log = logging.getLogger(__name__)

TRIAL_TAG = "sweep_trial_id"
SCORES = ("pq", "pq_th", "pq_st")


@dataclass(frozen=True)
class TrainSweepOptions:
    """max_concurrent: trials at once (0: as many as the cluster holds, `default_concurrency`);
    asha: stop weak trials early on the sweep metric (needs periodic evaluation, which is
    then switched on at every checkpoint); run: the trials' RunOptions (storage path,
    preset, ...); fresh: start a new sweep even when an unfinished one of the same command
    exists (otherwise that one is continued, `resume.py`)."""

    max_concurrent: int = 0
    asha: bool = False
    run: RunOptions = RunOptions()
    fresh: bool = False


def trial_config(cfg: Config, asha: bool) -> Config:
    """The trials' base config: with ASHA, periodic evaluation at every checkpoint, whatever
    eval.every_steps was: every checkpoint report reaches Tune, which refuses a report
    without `val/pq` (ASHA's metric)."""
    if asha:
        cfg = override(cfg, {"eval.every_steps": cfg.train.checkpoint_every})
    return cfg


def default_concurrency(cfg: Config, trial_cpus: float) -> int:
    """Trials that fit side by side: each holds its workers, its own process and one CPU
    for its data pipeline and evaluation actor; on GPUs, `train.num_workers` GPUs each."""

    res = ray.cluster_resources()
    per_trial = cfg.train.num_workers * cfg.train.cpus_per_worker + trial_cpus + 1
    fit = math.floor(res.get("CPU", 0) / per_trial)
    if cfg.train.uses_gpu:
        fit = min(fit, math.floor(res.get("GPU", 0) / cfg.train.num_workers))
    return max(1, fit)


def run_trials(
    sweep: Sweep,
    cfg: Config,
    opts: TrainSweepOptions,
    parent_run_id: str,
    tracking_uri: str,
    restore: bool = False,
):
    """Fit the grid with Tune; returns the `ResultGrid` (trial errors are in it, not raised).
    Trials log to `tracking_uri`, the driver's store, wherever they run. `restore`: continue
    the Tune experiment of this parent run saved under the storage path (its finished
    trials kept, unfinished ones resumed, failed ones started again with their retries)."""

    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(
            _trial,
            base=flatten(cfg),
            run=opts.run,
            parent_run_id=parent_run_id,
            tracking_uri=tracking_uri,
            asha=opts.asha,
            log_level=package_level(),
        ),
        {"cpu": sweep.trial_cpus},
    )
    param_space = {a.path: ray.tune.grid_search(list(a.values)) for a in sweep.axes}
    name = tune_name(sweep, parent_run_id)
    if restore:
        uri = experiment_uri(storage_path(opts.run), name)
        log.info("sweep %s: restoring the Tune experiment %s", sweep.name, uri)
        return ray.tune.Tuner.restore(
            uri, trainable, restart_errored=True, param_space=param_space
        ).fit()
    return ray.tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            scheduler=_scheduler(cfg, opts.asha),
            max_concurrent_trials=opts.max_concurrent or default_concurrency(cfg, sweep.trial_cpus),
        ),
        run_config=ray.tune.RunConfig(
            name=name,
            storage_path=storage_path(opts.run),
            failure_config=ray.tune.FailureConfig(max_failures=trial_retries(cfg.train)),
        ),
    ).fit()


def trial_retries(t: TrainConfig) -> int:
    """How often Tune starts a failed trial again: `train.max_failures`. Tune counts every
    failure of a trial and knows nothing of its progress, so an unlimited `max_failures`
    (-1, for spot workers, whose preemptions Ray Train handles inside the trial) becomes
    `train.crash_loop_limit` here: a trial failing the same way every time (its data, its
    evaluation) is not started forever; 0 there (no crash-loop limit) leaves it unlimited."""
    if t.max_failures >= 0:
        return t.max_failures
    return t.crash_loop_limit or -1


def _scheduler(cfg: Config, asha: bool) -> ASHAScheduler | None:
    if not asha:
        return None
    # stop_last_trials=False: a trial that reaches train.steps goes on to its final evaluation
    return ASHAScheduler(
        time_attr="step",
        grace_period=cfg.train.checkpoint_every,
        max_t=cfg.train.steps,
        stop_last_trials=False,
    )


def _trial(
    params: dict[str, Any],
    base: dict[str, Any],
    run: RunOptions,
    parent_run_id: str,
    tracking_uri: str,
    asha: bool,
    log_level: int,
) -> None:
    """One Tune trial: the training job with this trial's values, as a nested MLflow run;
    it logs at the sweep driver's `log_level`, and so do its training workers. A grid point
    with an earlier run under the parent (a retry, a continued sweep) resumes that run, or
    reports its scores when it finished."""

    configure_logging(log_level)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # this process runs one trial only

    cfg = override(from_flat(base), params)
    trial_id = ray.tune.get_context().get_trial_id()
    mlc = tracking.client(tracking_uri)
    earlier = earlier_trial_run(tracking.child_runs(mlc, parent_run_id), params)
    if earlier is not None and earlier.info.status == "FINISHED":
        log.info(
            "trial %s: MLflow run %s finished already", trial_label(params), earlier.info.run_id
        )
        ray.tune.report(_tune_result(run_scores(earlier), earlier.info.run_id))
        return
    if earlier is not None:
        log.info("trial %s: continuing MLflow run %s", trial_label(params), earlier.info.run_id)
        _wait_for_earlier_attempt(mlc, earlier.info.run_id)
        tracking.set_tags(mlc, earlier.info.run_id, {TRIAL_TAG: trial_id})
    summary = train_coco(
        cfg, _trial_options(run, cfg, params, parent_run_id, trial_id, asha, earlier)
    )
    ray.tune.report(_tune_result(summary["metrics"], summary["mlflow_run_id"]))


def _wait_for_earlier_attempt(mlc, run_id: str) -> None:
    """Wait until the driver lease of the trial's earlier attempt on its run is no longer
    live (platform/train/run_lock.py), at most until its heartbeat is stale. Tune starts a
    trial again once it saw the attempt fail, but an attempt lost with its node leaves a
    fresh heartbeat behind, and resuming a run whose lease is live is refused."""
    here, timing = Holder.this_process(), LeaseTiming()
    deadline = time.monotonic() + timing.stale_s + timing.heartbeat_s
    while time.monotonic() < deadline:
        holder = live_holder(mlc.get_run(run_id).data.tags, here, timing)
        if holder is None:
            return
        log.info("MLflow run %s: waiting for its earlier attempt (%s) to go stale", run_id, holder)
        time.sleep(timing.heartbeat_s)


def _trial_options(
    run: RunOptions,
    cfg: Config,
    params: dict[str, Any],
    parent_run_id: str,
    trial_id: str,
    asha: bool,
    earlier: Any,
) -> RunOptions:
    # checkpoint reports reach Tune only for a scheduler (ASHA): without periodic evaluation
    # they carry no val/pq, which Tune's strict metric check rejects
    dataset = cfg.data.dataset.value
    about = tracking.note(
        f"Sweep trial `{trial_label(params)}` (parent run `{parent_run_id}`): "
        f"training, preset `{run.preset}`, data set `{dataset}`.",
        False,
    )
    return replace(
        run,
        run_name=tracking.run_name(run.preset, dataset, overrides=params),
        parent_run_id=parent_run_id,
        report_to_tune=asha,
        summary_json="",
        tags=run.tags + ((TRIAL_TAG, trial_id), (tracking.NOTE_TAG, about)),
        resume=earlier.info.run_id if earlier is not None else "",
    )


def _tune_result(scores: dict[str, float | None], run_id: str) -> dict[str, Any]:
    return {
        **{f"val/{k}": v for k, v in scores.items() if v is not None},
        "mlflow_run_id": run_id,
    }


def stopped_trials(grid) -> set[str]:
    """Ids of the trials of a `ResultGrid` that ended without an error: finished, or
    stopped early by the scheduler."""
    return {
        r.metrics["trial_id"]
        for r in grid
        if r.error is None and r.metrics and "trial_id" in r.metrics
    }


def failed_trials(grid) -> list[tuple[dict[str, Any], BaseException]]:
    """(grid point, error) of each trial of a `ResultGrid` that failed after its retries;
    Tune records the point in every trial's result, reported or not."""
    return [((r.metrics or {}).get("config") or {}, r.error) for r in grid if r.error is not None]


def trial_rows(
    mlc,
    sweep: Sweep,
    parent_run_id: str,
    stopped: set[str],
    failed: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The child runs of the sweep in grid order, as summary rows, and a row (run_id None)
    for each `failed` grid point that failed before its run was created. A run that Tune
    stopped (ASHA; its run is left RUNNING or was marked FAILED by the interruption) is
    marked KILLED, with the scores it last logged; runs of trials that raised stay FAILED.
    pq: the final evaluation (`final/pq` when periodic evaluation also ran, else `val/pq`)."""
    runs = tracking.child_runs(mlc, parent_run_id)
    order = {trial_label(p): k for k, p in enumerate(sweep.grid())}
    rows = []
    for run in runs:
        status = run.info.status
        interrupted = status == "FAILED" and run.data.tags.get(TRIAL_TAG) in stopped
        if status == "RUNNING" or interrupted:
            mlc.set_terminated(run.info.run_id, "KILLED")
            status = "KILLED"
        rows.append(
            {
                "run_id": run.info.run_id,
                "params": point_values(sweep.paths, run.data.params),
                **run_scores(run),
                "status": status,
            }
        )
    have = {trial_label(r["params"]) for r in rows}
    for point in failed:
        if point and trial_label(point) not in have:
            rows.append(
                {"run_id": None, "params": dict(point), **dict.fromkeys(SCORES), "status": "FAILED"}
            )
    return sorted(rows, key=lambda r: order.get(trial_label(r["params"]), len(order)))


def run_scores(run) -> dict[str, float | None]:
    """A training run's scores: its final evaluation (`final/*` when periodic evaluation
    also ran, else `val/*`; a stopped run: its last periodic scores)."""
    m = run.data.metrics
    prefix = "final/" if "final/pq" in m else "val/"
    return {k: m.get(f"{prefix}{k}") for k in SCORES}
