"""The one sweep runner: a parent MLflow run, the trials nested under it (training runs, or
one child per sampler setting), then the summary table, plot and JSON on the parent."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import LoggedModelOutput

from pix2seqd.platform import tracking
from pix2seqd.platform.cluster_fit import check_training_fits
from pix2seqd.platform.config import Config, flatten, override
from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.default_data import resolve_data_root
from pix2seqd.platform.data.sources import gt_location, load_panoptic_split
from pix2seqd.platform.evaluation.coco_job import check_categories, load_checkpoint_config
from pix2seqd.platform.evaluation.tracked import parent_run, pq_metrics, run_status
from pix2seqd.platform.ray_env import cluster_gpus, ray_session
from pix2seqd.platform.sweep import report
from pix2seqd.platform.sweep.inference_sweep import evaluate_grid
from pix2seqd.platform.sweep.resume import (
    SWEEP_KEY_TAG,
    experiment_uri,
    restorable,
    sweep_key,
    tune_name,
    unfinished_parent,
)
from pix2seqd.platform.sweep.spec import (
    Sweep,
    SweepKind,
    check_sweep,
    checkpoint_sweep,
    trial_label,
)
from pix2seqd.platform.sweep.train_sweep import (
    TrainSweepOptions,
    failed_trials,
    run_trials,
    stopped_trials,
    trial_config,
    trial_retries,
    trial_rows,
)
from pix2seqd.platform.sweep.video_sweep import evaluate_video_grid, video_metrics, video_scores
from pix2seqd.platform.train.auto import resolve_auto
from pix2seqd.platform.train.options import storage_path
from pix2seqd.platform.train.run import validate_training_config
from pix2seqd.platform.train.run_lock import DriverLease, RunLockedError, live_holder

log = logging.getLogger(__name__)


def run_train_sweep(
    sweep: Sweep, cfg: Config, opts: TrainSweepOptions, summary_json: str = ""
) -> dict[str, Any]:
    """Every grid point trained as its own Ray Train run (Tune trials), compared on the
    parent run. A failing trial is retried (`train_sweep`) and, when it keeps failing,
    reported (status FAILED) without stopping the others; the sweep then writes its summary
    and raises, naming the failed trials. The same command run again continues an
    unfinished sweep (`resume.py`) unless `opts.fresh`."""

    _expect(sweep, SweepKind.TRAIN)
    cfg = trial_config(cfg, opts.asha)
    check_sweep(sweep, cfg)
    for point in sweep.grid():  # before any trial starts: a bad setting costs nothing
        validate_training_config(override(cfg, point))
    mlc = tracking.client()
    lease = DriverLease(mlc)  # one driver per sweep, as per training run
    parent, restore = _train_parent(mlc, sweep, cfg, opts, lease)
    with (
        lease.kept(parent),
        run_status(mlc, parent),
        ray_session(
            cfg.train.num_workers * cfg.train.cpus_per_worker + sweep.trial_cpus,
            cfg.data.executor_nap,
        ),
    ):
        cfg = resolve_auto(cfg, opts.run.init_from)  # once, for every trial alike
        check_training_fits(cfg)  # before any trial starts (trials do not check again)
        grid = run_trials(sweep, cfg, opts, parent, mlc.tracking_uri, restore)
        failed = failed_trials(grid)
        rows = trial_rows(mlc, sweep, parent, stopped_trials(grid), [p for p, _ in failed])
        for point, err in failed:
            log.error("sweep %s: trial %s failed: %s", sweep.name, trial_label(point), _cause(err))
        summary = _finish(mlc, parent, sweep, rows, failed)
        _link_best_model(mlc, parent, report.best_row(sweep, rows))
        _write(summary, summary_json)
        if failed:
            raise RuntimeError(_failed_message(sweep, cfg, failed, rows, parent))
    return summary


def _train_parent(
    mlc, sweep: Sweep, cfg: Config, opts: TrainSweepOptions, lease: DriverLease
) -> tuple[str, bool]:
    """(parent run id, whether Tune restores its experiment): the unfinished parent run of
    the same command, claimed by this driver and continued, or a new one."""
    key = sweep_key(sweep, cfg, opts.run, opts.asha)
    earlier = None if opts.fresh else unfinished_parent(mlc, key, opts.run.experiment)
    if earlier is None:
        tags = {"preset": opts.run.preset, "asha": str(opts.asha), SWEEP_KEY_TAG: key}
        return _open_parent(mlc, sweep, cfg, {**tags, **lease.tags()}, opts.run.experiment), False
    parent = earlier.info.run_id
    holder = live_holder(earlier.data.tags, lease.holder, lease.timing)
    if holder is not None:
        raise RunLockedError(
            f"sweep {sweep.name}: another driver ({holder}) runs this command's sweep "
            f"(parent run {parent}); let it finish, or stop it and run the command again, "
            "or start a separate sweep with --fresh"
        )
    lease.claim(parent)
    uri = experiment_uri(storage_path(opts.run), tune_name(sweep, parent))
    restore = restorable(uri)
    log.info(
        "sweep %s: continuing parent MLflow run %s (%s; %s)",
        sweep.name,
        parent,
        earlier.info.status,
        f"Tune restores {uri}"
        if restore
        else "no saved Tune state: trials start again, each resuming its own earlier run",
    )
    mlc.update_run(parent, status="RUNNING")
    return parent, restore


@dataclass(frozen=True)
class InferenceSweepInputs:
    """checkpoint: CKPT reference; data_root: COCO- or DAVIS-layout folder ('' = the
    generated set); split: the split scored ('' = the checkpoint's `data.val_split`, 'val'
    for a video checkpoint as in eval_davis);
    overrides: dotted paths over the checkpoint's config; values: other values for some axes
    of the grid the checkpoint gets (image or video, `spec.checkpoint_sweep`)."""

    checkpoint: str
    data_root: str = ""
    split: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


def run_inference_sweep(
    sweep: Sweep, inputs: InferenceSweepInputs, summary_json: str = ""
) -> dict[str, Any]:
    """Score every grid point of sampler settings on one checkpoint, one child run per grid
    point under the sweep's parent run: PQ for an image model (encoder features shared by
    the whole grid), J&F for a video model (`sweep.video`'s grid, `video_sweep`)."""

    _expect(sweep, SweepKind.INFERENCE)
    location, cfg, meta = load_checkpoint_config(inputs.checkpoint, dict(inputs.overrides))
    video = cfg.model.decoder.cond_frames > 0
    sweep = checkpoint_sweep(sweep, video, inputs.values, inputs.checkpoint)
    check_sweep(sweep, cfg)
    root = resolve_data_root(inputs.data_root, video)
    # eval_davis's default split for a video model
    split = inputs.split or ("val" if video else cfg.data.val_split)
    if video:
        score = _score_video(location, cfg, root, split)
    else:
        score = _score_images(location, cfg, meta, inputs.checkpoint, root, split)
    mlc = tracking.client()
    tags = {
        "checkpoint": inputs.checkpoint,
        "source_run_id": parent_run(inputs.checkpoint, meta),
        "split": split,
    }
    parent = _open_parent(mlc, sweep, cfg, tags, "")
    with (
        run_status(mlc, parent),
        ray_session(executor_nap=cfg.data.executor_nap),
        tempfile.TemporaryDirectory() as tmp,
    ):
        grid = sweep.grid()
        results, timing = score(grid, Path(tmp), cluster_gpus() > 0)
        tracking.log_metrics(mlc, parent, {f"eval/{k}": v for k, v in timing.items()}, 0)
        exp = mlc.get_run(parent).info.experiment_id
        # what each trial scored, so that the trials of several sweeps (a teacher's and its
        # distilled students') can be put side by side in the MLflow UI
        scored = {"checkpoint": inputs.checkpoint, "checkpoint_steps": str(cfg.sample.steps)}
        if cfg.distill.teacher:
            scored["distill_teacher"] = cfg.distill.teacher
        rows = [
            _grid_child(mlc, parent, exp, point, res, scored, video)
            for point, res in zip(grid, results)
        ]
        summary = _finish(mlc, parent, sweep, rows)
    return _write(summary, summary_json)


def _score_images(location: str, cfg: Config, meta, checkpoint: str, root: Path, split: str):
    """(grid, work_dir, use_gpu) -> (R.json per grid point, timing), data checked now."""
    records, cmap = load_panoptic_split(cfg.data.dataset, root, split)
    check_categories(cmap, cfg, meta, checkpoint)
    gt = gt_location(cfg.data.dataset, root, split)
    return lambda grid, tmp, gpu: evaluate_grid(
        location, cfg, grid, records, cmap, gt, tmp, cfg.eval, gpu
    )


def _score_video(location: str, cfg: Config, root: Path, split: str):
    """(grid, work_dir, use_gpu) -> (J.json per grid point, timing), sequences listed now."""
    videos = load_davis(root, split)
    return lambda grid, tmp, gpu: evaluate_video_grid(
        location, cfg, grid, videos, (str(root), split), tmp, gpu
    )


def _grid_child(
    mlc,
    parent: str,
    exp: str,
    point: dict[str, Any],
    result: dict[str, Any],
    scored: dict[str, str],
    video: bool,
) -> dict[str, Any]:
    about = tracking.note(
        f"Sampler setting `{trial_label(point)}` of the inference sweep in parent run `{parent}`.",
        False,
    )
    run_id = tracking.start_run(
        mlc,
        point,
        {"job": "sweep_trial", tracking.NOTE_TAG: about, **scored},
        run_name=tracking.run_name(overrides=point),
        parent_run_id=parent,
        in_experiment=exp,
    )
    metrics = video_metrics(result) if video else pq_metrics(result)
    tracking.log_metrics(mlc, run_id, metrics, 0)
    mlc.set_terminated(run_id, "FINISHED")
    scores = video_scores(result) if video else _pq_scores(result)
    return {"run_id": run_id, "params": dict(point), **scores, "status": "FINISHED"}


def _pq_scores(result: dict[str, Any]) -> dict[str, float]:
    return {
        "pq": result["All"]["pq"],
        "pq_th": result["Things"]["pq"],
        "pq_st": result["Stuff"]["pq"],
    }


def _open_parent(mlc, sweep: Sweep, cfg: Config, tags: dict[str, str], experiment: str) -> str:
    """The parent run: the trials' shared config as params (swept paths left out, they
    differ per child), the sweep's definition as tags and description; `experiment` ''
    is `tracking.experiment_name()`."""
    params = {k: v for k, v in flatten(cfg).items() if k not in sweep.paths}
    grid = "; ".join(f"`{a.path}` in {list(a.values)}" for a in sweep.axes)
    about = tracking.note(
        f"Sweep `{sweep.name}` ({sweep.paper}), {sweep.kind.value}: {grid}; "
        f"one nested run per trial, compared on `{sweep.metric}` in "
        f"`sweep/summary.md` and the `sweep/{sweep.scores[0]}_vs_*.png` plot."
    )
    all_tags = {
        "job": "sweep",
        "sweep": sweep.name,
        "sweep_kind": sweep.kind.value,
        "paper": sweep.paper,
        "sweep_metric": sweep.metric,
        "sweep_grid": json.dumps({a.path: list(a.values) for a in sweep.axes}),
        tracking.NOTE_TAG: about,
        **tags,
    }
    run_id = tracking.start_run(
        mlc, params, all_tags, run_name=f"sweep-{sweep.name}", experiment=experiment
    )
    log.info("sweep %s: parent MLflow run %s in %s", sweep.name, run_id, mlc.tracking_uri)
    return run_id


def _link_best_model(mlc, parent: str, best: dict[str, Any] | None) -> None:
    """The best trial's logged model as an output of the parent run too: MLflow's UI files a
    run with a model output under training runs, one without under evaluation runs."""
    if best is None:
        return
    exp = mlc.get_run(parent).info.experiment_id
    models = mlc.search_logged_models([exp], f"source_run_id = '{best['run_id']}'", max_results=1)
    if models:
        mlc.log_outputs(parent, [LoggedModelOutput(models[0].model_id, step=0)])


def _finish(
    mlc,
    parent: str,
    sweep: Sweep,
    rows: list[dict[str, Any]],
    failed: Sequence[tuple[dict[str, Any], BaseException]] = (),
) -> dict[str, Any]:
    if not any(r.get(sweep.scores[0]) is not None for r in rows):
        first = f"; first error: {_cause(failed[0][1])}" if failed else ""
        names = ", ".join(trial_label(p) or "?" for p, _ in failed)
        raise RuntimeError(
            f"sweep {sweep.name}: no trial produced a score ({len(rows)} trials, "
            f"{len(failed)} failed: {names or 'none'}{first}; parent run {parent})"
        )
    failed_rows = sum(r["status"] == "FAILED" for r in rows)
    tracking.set_tags(mlc, parent, {"trials": str(len(rows)), "failed_trials": str(failed_rows)})
    summary = report.log_summary(mlc, parent, sweep, rows)
    print(report.table_markdown(sweep, rows))  # the sweep's result table: stdout, not the log
    return summary


def _failed_message(
    sweep: Sweep,
    cfg: Config,
    failed: Sequence[tuple[dict[str, Any], BaseException]],
    rows: list[dict[str, Any]],
    parent: str,
) -> str:
    """Which trials failed, their MLflow runs and errors, and how to retry them."""
    run_of = {trial_label(r["params"]): r["run_id"] for r in rows}
    named = "; ".join(
        f"`{trial_label(p)}` (MLflow run {run_of.get(trial_label(p)) or 'none'}): {_cause(e)}"
        for p, e in failed
    )
    attempts = 1 + trial_retries(cfg.train)
    return (
        f"sweep {sweep.name}: {len(failed)} of {len(rows)} trials failed "
        f"({attempts} attempt{'s' if attempts > 1 else ''} each): {named}. The other "
        f"trials' results are on parent run {parent}; run the same command again to retry "
        "the failed trials (finished ones are kept)."
    )


def _cause(err: BaseException) -> str:
    """The exception a trial raised, without Ray's wrapping traceback."""
    cause = getattr(err, "cause", None) or err
    return f"{type(cause).__name__}: {cause}"


def _write(summary: dict[str, Any], path: str) -> dict[str, Any]:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(summary, indent=2))
    return summary


def _expect(sweep: Sweep, kind: SweepKind) -> None:
    if sweep.kind != kind:
        raise ValueError(f"sweep {sweep.name!r} is a {sweep.kind.value} sweep, not {kind.value}")
