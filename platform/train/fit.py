"""The Ray Train part of a training job, shared by the image and video jobs: build the
`TorchTrainer`, fit, find the checkpoint to evaluate, log the final model to MLflow."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import mlflow
import ray
import ray.train
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from pix2seqd.platform import tracking
from pix2seqd.platform.config import Config, flatten
from pix2seqd.platform.data.read_ahead import ingest_options
from pix2seqd.platform.log import package_level
from pix2seqd.platform.ray_env import preemption_watcher, sigint_handler_kept
from pix2seqd.platform.serving.log_model import log_served_model
from pix2seqd.platform.train.checkpoints import CheckpointTags, checkpoint_uri
from pix2seqd.platform.train.crash_loop import failure_handling
from pix2seqd.platform.train.init_weights import start_weights, teacher_weights
from pix2seqd.platform.train.loop import WorkerJob, train_loop_per_worker
from pix2seqd.platform.train.options import RunOptions, storage_path
from pix2seqd.platform.train.run_lock import DriverLease, mark_dead_runs
from pix2seqd.platform.train.state import CheckpointMeta
from pix2seqd.platform.train.streams import TrainStream

if TYPE_CHECKING:  # an annotation only; periodic_eval imports torch
    from pix2seqd.platform.train.periodic_eval import ValSubset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitInputs:
    """What the workers read besides the config.

    stream: the training examples (images or video clips); num_train: examples per epoch;
    categories: the COCO category list recorded in checkpoints; val_subset: periodic
    evaluation data or None; val_metric: the periodic score of the progress line."""

    stream: TrainStream
    num_train: int
    categories: list[dict[str, Any]] = field(default_factory=list)
    val_subset: ValSubset | None = None
    val_metric: str = "val/pq"


def open_run(
    mlc, cfg: Config, opts: RunOptions, tags: dict[str, str], lease: DriverLease | None = None
) -> str:
    """The job's MLflow run: a new one (params = the flattened config; the storage path is
    recorded for --resume), or the resumed run, marked RUNNING again.

    With `lease` (platform/train/run_lock.py) the run is this driver's: a resumed run is
    claimed (refused while another live driver holds it), a new run under --resume auto
    gives way to one of the same name another driver made first, and the RUNNING runs of
    the experiment whose drivers died are marked FAILED."""
    if opts.resume:
        if lease is not None:
            lease.claim(opts.resume)
        mlc.update_run(opts.resume, status="RUNNING")
        run_id = opts.resume
    else:
        run_id = _new_run(mlc, cfg, opts, tags, lease)
    if lease is not None:
        experiment = mlc.get_run(run_id).info.experiment_id
        mark_dead_runs(mlc, experiment, lease.holder, lease.timing)
    log.info("MLflow run %s in %s%s", run_id, mlc.tracking_uri, " (resumed)" if opts.resume else "")
    return run_id


def _new_run(
    mlc, cfg: Config, opts: RunOptions, tags: dict[str, str], lease: DriverLease | None
) -> str:
    all_tags = {**tags, **dict(opts.tags), "storage_path": storage_path(opts)}
    if lease is not None:
        all_tags.update(lease.tags())
    experiment = (
        mlc.get_run(opts.parent_run_id).info.experiment_id
        if opts.parent_run_id
        else tracking.experiment_id(mlc, opts.experiment)
    )
    run_id = tracking.start_run(
        mlc,
        flatten(cfg),
        all_tags,
        run_name=opts.run_name or None,
        parent_run_id=opts.parent_run_id or None,
        in_experiment=experiment,
    )
    if lease is not None and opts.resume_auto:
        lease.confirm_sole(run_id, opts.run_name, experiment)
    return run_id


def oldest_kept_step(mlc, run_id: str) -> int:
    """The step of the run's oldest recorded checkpoint (0 when none): a resumed run's
    workers restore from Ray Train's newest registered checkpoint that loads, which can be
    older than the newest tag (a driver killed between a checkpoint's upload and its
    registration, a newest checkpoint set aside as corrupt), never older than the kept ones."""
    return min(CheckpointTags.of_run(mlc, run_id).refs, default=0)


def ray_run_name(run_id: str) -> str:
    return f"pix2seqd-{run_id[:12]}"


def fit(cfg: Config, opts: RunOptions, inputs: FitInputs, run_id: str, uri: str):
    """Run the training loop on Ray Train; returns the `ray.train.Result`.

    Per-rank datasets (data.exact_order) are built by the workers from the restored step;
    otherwise the driver's stream (images or video clips) is split by Ray Train."""

    t = cfg.train
    failures, guards = failure_handling(t)
    per_rank = cfg.data.exact_order
    start = start_weights(cfg, opts.init_from)
    if cfg.model.encoder.init or opts.init_from:
        tracking.set_tags(tracking.client(uri), run_id, start.tags())
    teacher = teacher_weights(cfg)
    job = WorkerJob(
        cfg,
        CheckpointMeta(run_id, uri, list(inputs.categories), list(start.trained_scope)),
        storage_path(opts),
        ray_run_name(run_id),
        inputs.num_train,
        start=ray.put(start.state) if start.state else None,
        teacher=ray.put(teacher) if teacher is not None else None,
        stream=ray.put(inputs.stream) if per_rank else None,
        val_subset=inputs.val_subset,
        val_metric=inputs.val_metric,
        log_level=package_level(),
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job},
        scaling_config=ray.train.ScalingConfig(
            num_workers=t.num_workers,
            use_gpu=t.uses_gpu,
            placement_strategy=t.placement_strategy.value,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.uses_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=ray_run_name(run_id),
            storage_path=storage_path(opts),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=t.keep_checkpoints),
            failure_config=failures,
            callbacks=[*_tune_callbacks(opts), *guards],
        ),
        datasets={} if per_rank else {"train": _split_stream(cfg, inputs, opts, run_id, uri)},
        dataset_config=ray.train.DataConfig(execution_options=ingest_options(cfg)),
    )
    t0 = time.perf_counter()
    with sigint_handler_kept(), preemption_watcher(t.preemption_watcher):
        result = trainer.fit()
    log.info("training finished in %.0f s", time.perf_counter() - t0)
    return result


def _tune_callbacks(opts: RunOptions) -> list:
    """In a sweep trial, every checkpoint report (step, train/loss, val/pq when evaluated)
    also reaches Ray Tune, so schedulers such as ASHA can stop the trial early."""
    if not opts.report_to_tune:
        return []

    return [TuneReportCallback()]


def _split_stream(cfg: Config, inputs: FitInputs, opts: RunOptions, run_id: str, uri: str):
    """The driver's stream; when resuming a run, from the position of its oldest kept
    checkpoint (`oldest_kept_step`), so that the stream lasts to `train.steps` from
    whichever of them the workers restore.

    Video clips go the same way as images: per-rank clip datasets run a Ray Data executor
    inside each training process, which on 2 cores cost the video run most of its speed."""
    step = oldest_kept_step(tracking.client(uri), run_id) if opts.resume else 0
    start = step * cfg.train.batch_size
    return inputs.stream.dataset(cfg, 0, 1, start)


def chosen_checkpoint(mlc, run_id: str, result, opts: RunOptions) -> tuple[str, int]:
    """(CKPT reference, step) of the checkpoint the run stands for: the best by val/pq
    when the run evaluated periodically, else the last one. The workers recorded it in
    the run's tags; the result's last checkpoint is the fallback."""
    tags = CheckpointTags.of_run(mlc, run_id)
    ref = tags.best_ref or checkpoint_uri(result.checkpoint.path, storage_path(opts))
    step = (
        tags.best_step if tags.best_step is not None else int((result.metrics or {}).get("step", 0))
    )
    tracking.set_tags(mlc, run_id, CheckpointTags.best_tags(ref))
    return ref, step


def log_final_model(mlc, run_id: str, checkpoint: str) -> None:
    """`checkpoint` as the run's served MLflow model `model`: a pyfunc that segments images
    (or videos) as jobs/predict.py does, `mlflow.pyfunc.load_model("runs:/<run id>/model")`
    or `mlflow models serve` (docs/serving.md)."""
    mlflow.set_tracking_uri(mlc.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        log_served_model(checkpoint)
