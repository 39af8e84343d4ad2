"""Training sweeps: each trial is a full training job (Ray Train, the same `train_coco` as
`jobs/train_coco.py`) launched from a Ray Tune function trainable, nested in MLflow under
the sweep's parent run.

Ray 2.60 runs Train V2, where a `TorchTrainer` cannot be handed to a `Tuner`; the trial
function builds and fits it instead, with `TuneReportCallback` forwarding the workers'
checkpoint reports (`step`, `val/pq` when evaluated) to Tune, which is what ASHA reads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import ray
import ray.tune
from ray.tune.schedulers import ASHAScheduler

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten, from_flat, override
from pix2seqd.platform.log import configure_logging, package_level
from pix2seqd.platform.sweep.spec import Sweep, trial_label
from pix2seqd.platform.train.options import RunOptions, storage_path
from pix2seqd.platform.train.run import train_coco

TRIAL_TAG = "sweep_trial_id"


@dataclass(frozen=True)
class TrainSweepOptions:
    """max_concurrent: trials at once (0: as many as the cluster holds, `default_concurrency`);
    asha: stop weak trials early on the sweep metric (needs periodic evaluation, which is
    then switched on at every checkpoint); run: the trials' RunOptions (storage path,
    preset, ...)."""

    max_concurrent: int = 0
    asha: bool = False
    run: RunOptions = RunOptions()


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
    sweep: Sweep, cfg: Config, opts: TrainSweepOptions, parent_run_id: str, tracking_uri: str
):
    """Fit the grid with Tune; returns the `ResultGrid` (trial errors are in it, not raised).
    Trials log to `tracking_uri`, the driver's store, wherever they run."""

    trainable = ray.tune.with_parameters(
        _trial,
        base=flatten(cfg),
        run=opts.run,
        parent_run_id=parent_run_id,
        tracking_uri=tracking_uri,
        asha=opts.asha,
        log_level=package_level(),
    )
    # stop_last_trials=False: a trial that reaches train.steps goes on to its final evaluation
    scheduler = (
        ASHAScheduler(
            time_attr="step",
            grace_period=cfg.train.checkpoint_every,
            max_t=cfg.train.steps,
            stop_last_trials=False,
        )
        if opts.asha
        else None
    )
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(trainable, {"cpu": sweep.trial_cpus}),
        param_space={a.path: ray.tune.grid_search(list(a.values)) for a in sweep.axes},
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            scheduler=scheduler,
            max_concurrent_trials=opts.max_concurrent or default_concurrency(cfg, sweep.trial_cpus),
        ),
        run_config=ray.tune.RunConfig(
            name=f"sweep-{sweep.name}-{parent_run_id[:12]}", storage_path=storage_path(opts.run)
        ),
    )
    return tuner.fit()


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
    it logs at the sweep driver's `log_level`, and so do its training workers."""

    configure_logging(log_level)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # this process runs one trial only

    cfg = override(from_flat(base), params)
    trial_id = ray.tune.get_context().get_trial_id()
    # checkpoint reports reach Tune only for a scheduler (ASHA): without periodic evaluation
    # they carry no val/pq, which Tune's strict metric check rejects
    dataset = cfg.data.dataset.value
    about = tracking.note(
        f"Sweep trial `{trial_label(params)}` (parent run `{parent_run_id}`): "
        f"training, preset `{run.preset}`, data set `{dataset}`.",
        False,
    )
    opts = replace(
        run,
        run_name=tracking.run_name(run.preset, dataset, overrides=params),
        parent_run_id=parent_run_id,
        report_to_tune=asha,
        summary_json="",
        tags=run.tags + ((TRIAL_TAG, trial_id), (tracking.NOTE_TAG, about)),
    )
    summary = train_coco(cfg, opts)
    ray.tune.report(
        {
            **{f"val/{k}": v for k, v in summary["metrics"].items()},
            "mlflow_run_id": summary["mlflow_run_id"],
        }
    )


def stopped_trials(grid) -> set[str]:
    """Ids of the trials of a `ResultGrid` that ended without an error: finished, or
    stopped early by the scheduler."""
    return {
        r.metrics["trial_id"]
        for r in grid
        if r.error is None and r.metrics and "trial_id" in r.metrics
    }


def trial_rows(mlc, sweep: Sweep, parent_run_id: str, stopped: set[str]) -> list[dict[str, Any]]:
    """The child runs of the sweep in grid order, as summary rows. A run that Tune stopped
    (ASHA; its run is left RUNNING or was marked FAILED by the interruption) is marked
    KILLED, with the scores it last logged; runs of trials that raised stay FAILED.
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
        m = run.data.metrics
        prefix = "final/" if "final/pq" in m else "val/"
        rows.append(
            {
                "run_id": run.info.run_id,
                "params": swept_values(sweep, run.data.params),
                **{k: m.get(f"{prefix}{k}") for k in ("pq", "pq_th", "pq_st")},
                "status": status,
            }
        )
    return sorted(rows, key=lambda r: order.get(trial_label(r["params"]), len(order)))


def swept_values(sweep: Sweep, params: dict[str, str]) -> dict[str, Any]:
    """The swept fields of a run's MLflow params (strings), typed as in the config."""
    typed = flatten(from_flat({p: params[p] for p in sweep.paths}))
    return {p: typed[p] for p in sweep.paths}
